"""CUDA graphs of the streaming step: the generator's forward and the decode of one latent frame, replayed.

A step of a large model launches thousands of kernels, and on a fast GPU launching them costs more than running
them; a CUDA graph launches a whole recorded step at once. A graph replays fixed kernels on fixed addresses, so the
step must have static shapes and its state must stay put:
- the KV cache's buffers are preallocated, and once every slot holds a frame (`KVCache.full`) each step reads all
  of them; the slot a step writes is baked into its graph, so there is one graph per ring slot (`window + 1`
  graphs), each captured the first time its slot comes round;
- the position the RoPE needs lives on the device (`KVCache.frame`) and advances in place inside the graph;
- the decoder's cached frames are updated in place (`DecoderCache.keep`): one graph serves every decode after the
  first.
A rewind copies a saved state into the live caches (`load_`), so the graphs stay valid; caches at other addresses
(a new stream) drop them. The steps before the cache is full run eagerly.
"""
from __future__ import annotations

from typing import Callable

import torch

from model.generator import Generator, KVCache
from model.vae import VAE, DecoderCache


class StreamGraphs:
    """The graphs of one generated world's step on one CUDA device (see the module docstring)."""

    def __init__(self, generator: Generator, vae: VAE):
        self.generator, self.vae = generator, vae
        self.pool = None                     # one memory pool for all the graphs: they never run at once
        self.step_graphs: dict[int, torch.cuda.CUDAGraph] = {}  # ring slot -> the generator's step writing it
        self.decode_graph: torch.cuda.CUDAGraph | None = None
        self.bound: tuple[int, ...] = ()     # the addresses of the caches the graphs were captured against
        self.inputs: dict[str, torch.Tensor] = {}

    @staticmethod
    def usable(cache: KVCache, decoder: DecoderCache) -> bool:
        """Static shapes: the KV cache's ring is full and the decoder is past its first frame."""
        return cache.k[0].is_cuda and cache.full() and decoder.step > 0

    def step(self, noise: torch.Tensor, prev: torch.Tensor, cam: torch.Tensor, t: torch.Tensor, cache: KVCache,
             decoder: DecoderCache, clock: Callable[[], float]) -> tuple[torch.Tensor, torch.Tensor, float]:
        """What GeneratedWorld.step computes eagerly: the latent x = z - v and its four frames, and the time the
        generator's part ended (from `clock`). The returned tensors are the graphs' outputs: read them before the
        next step."""
        self._bind(cache, decoder, noise, prev, cam, t)
        for name, value in (("noise", noise), ("prev", prev), ("cam", cam), ("t", t)):
            self.inputs[name].copy_(value)
        slot = cache.slot()
        if slot not in self.step_graphs:
            self.step_graphs[slot] = self._capture_step(cache, decoder)
        self.step_graphs[slot].replay()
        cache.steps += 1  # the graph advanced the device's count (KVCache.frame), not Python's
        middle = clock()
        if self.decode_graph is None:
            self.decode_graph = self._capture_decode(cache, decoder)
        self.decode_graph.replay()
        decoder.step += 1
        return self.inputs["latent"], self.inputs["frames"], middle

    def _capture_step(self, cache: KVCache, decoder: DecoderCache) -> torch.cuda.CUDAGraph:
        x = self.inputs
        with side_stream():  # warm-up; commit=False leaves the cache's frames as they are
            self.generator.step(x["noise"], x["prev"], x["cam"], x["t"], cache, commit=False)
        return self._record(lambda: x["latent"].copy_(
            x["noise"] - self.generator.step(x["noise"], x["prev"], x["cam"], x["t"], cache)), cache, decoder)

    def _capture_decode(self, cache: KVCache, decoder: DecoderCache) -> torch.cuda.CUDAGraph:
        with side_stream():  # warm-up on a copy of the decoder's state; it tells the output's shape too
            frames = self.vae.decode_step(self.inputs["latent"], decoder.clone())
        self.inputs["frames"] = torch.empty_like(frames)
        return self._record(lambda: self.inputs["frames"].copy_(self.vae.decode_step(self.inputs["latent"], decoder)),
                            cache, decoder)

    def _bind(self, cache, decoder, *inputs) -> None:
        """(Re)allocate the static inputs and outputs, and forget the graphs, when the caches are new ones."""
        bound = tuple(b.data_ptr() for b in cache.k + cache.v) + tuple(t.data_ptr() for t in decoder.frames.values())
        if bound == self.bound:
            return
        self.step_graphs.clear()
        self.decode_graph, self.pool, self.bound = None, None, bound
        noise, prev, cam, t = inputs
        self.inputs = {"noise": noise.clone(), "prev": prev.clone(), "cam": cam.clone(), "t": t.clone(),
                       "latent": torch.empty_like(noise)}  # and "frames", once the decode's warm-up shows its shape

    def _record(self, run: Callable[[], object], cache: KVCache, decoder: DecoderCache) -> torch.cuda.CUDAGraph:
        """Capture `run` into a graph. A capture records kernels without running them, but the Python side of
        `run` does run: the caches' Python counters are put back after it. The graphs share one memory pool although
        they replay in another order than they were captured: nothing they allocate outlives a replay (their
        results go to the static buffers, allocated outside the pool), and they replay one after another."""
        steps, decoded = cache.steps, decoder.step
        graph = torch.cuda.CUDAGraph()
        # thread_local: the stream is stepped on the client's worker thread; other threads may use CUDA meanwhile
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            run()
        cache.steps, decoder.step = steps, decoded
        if self.pool is None:
            self.pool = graph.pool()
        return graph


class side_stream:
    """Run a block on a fresh side stream, ordered after and before the current stream's work: a graph's warm-up
    (the first calls initialise the libraries' workspaces, which a capture must not do)."""

    def __enter__(self):
        self.stream = torch.cuda.Stream()
        self.stream.wait_stream(torch.cuda.current_stream())
        self.context = torch.cuda.stream(self.stream)
        self.context.__enter__()

    def __exit__(self, *exc):
        self.context.__exit__(*exc)
        torch.cuda.current_stream().wait_stream(self.stream)
