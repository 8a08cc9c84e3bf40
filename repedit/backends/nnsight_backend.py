"""The "nnsight" backend: an nnsight trace over the same module table as the torch backend.

nnsight requires reads and writes in execution order, so keys are visited sorted by depth.
Wrapping changes the tokenizer's padding side, so the wrapper gets its own copy.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch

from repedit.backends.base import (
    Key,
    RunResult,
    WriteFn,
    check_keys,
    deepest,
    expect_all_read,
    order,
    register,
)
from repedit.backends.torch_hooks import hook_target


class NNsightBackend:
    name = "nnsight"

    def __init__(self, handle):
        self.handle = handle
        self._wrapped = None
        self._envoys: dict[int, object] = {}

    @property
    def wrapped(self):
        if self._wrapped is None:
            if self.handle.is_toy:
                from nnsight import NNsight

                self._wrapped = NNsight(self.handle.model)
            else:
                from nnsight import LanguageModel

                self._wrapped = LanguageModel(self.handle.model, tokenizer=copy.deepcopy(self.handle.tokenizer))
            self._envoys = {id(env._module): env for env in self._iter_envoys(self._wrapped)}
        return self._wrapped

    @staticmethod
    def _iter_envoys(root):
        stack = [root]
        while stack:
            env = stack.pop()
            yield env
            stack.extend(env._children)

    def _envoy(self, key: Key):
        module, kind = hook_target(self.handle, key)
        return self._envoys[id(module)], kind

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
            reads: Sequence[Key] = (), writes: Mapping[Key, WriteFn] | None = None,
            stop_early: bool = False) -> RunResult:
        writes = dict(writes or {})
        check_keys(self.handle, list(reads) + list(writes))
        wrapped = self.wrapped
        keys = sorted(set(reads) | set(writes), key=order)
        last = deepest(reads, writes) if stop_early else None
        saved = {}
        logits_proxy = None
        if self.handle.is_toy:
            ctx = wrapped.trace(input_ids)
        else:
            ctx = wrapped.trace({"input_ids": input_ids, "attention_mask": attention_mask})
        with ctx as tracer:
            for key in keys:
                env, kind = self._envoy(key)
                value = env.input if kind == "pre" else env.output
                tuple_out = kind == "out" and isinstance(value, tuple)
                tensor = value[0] if tuple_out else value
                if key in writes:
                    new = writes[key](tensor)
                    if kind == "pre":
                        env.input = new
                    elif tuple_out:
                        env.output = (new, *value[1:])
                    else:
                        env.output = new
                    tensor = new
                if key in reads:
                    saved[key] = tensor.save()
                if key == last:
                    tracer.stop()
            if last is None:
                logits_proxy = wrapped.output.save()
        acts = {k: v.detach() for k, v in saved.items()}
        expect_all_read(acts, reads, self.name)
        logits = None
        if logits_proxy is not None:
            logits = logits_proxy.logits if hasattr(logits_proxy, "logits") else logits_proxy
        return RunResult(logits=logits, acts=acts)


register("nnsight")(NNsightBackend)
