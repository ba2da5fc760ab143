"""The APT2 training recipe (DESIGN section 4, docs/training.md): `explorer train STAGE`.

    options.py       the command's options and each stage's defaults
    train.py         the entry: resolve options, open the run and the data, build the stage, run it
    run.py           the run folder, the loop (progress bar, metrics.jsonl, loss.png, saves, Ctrl-C)
    state.py         the training state file (safetensors) that --resume restores bit for bit
    distributed.py   torchrun and FSDP2 fully_shard
    data.py          clips, train/validation split, per-sample seeded randomness, latent cache, camera embeddings
    losses.py        flow matching, consistency distillation, relativistic pairing, approximated R1/R2, VAE terms
    sampling.py      the one-step rollout (inference and student forcing) and the diffusion samplers
    stage.py         what the stages share
    vae.py, decoder.py, diffusion.py (pretrain, diffusion), consistency.py, adversarial.py (adversarial, long):
                     the stages
"""
