"""import-routing: turn the expert loads an engine dumped (read by `vibe_plan.engines`) into a
routing profile, with decoder-layer ids and model facts from the checkpoint's config when given.

What each engine writes (checked against its code) and what is done with it here:

- layers: SGLang and vLLM have a row per decoder layer; dense layers are all zero (SGLang) or
  expert 0 for every token (vLLM's zero-filled buffer): the config's MoE layers are kept, or
  without a config the layers that look dense are dropped. TensorRT-LLM keys its counts by
  decoder layer and adds its MTP layers as `num_hidden_layers + i`: those are dropped.
- experts: TensorRT-LLM counts slots when its load balancer is on; `--placement` (the
  load-balancer file) folds them back onto experts.
- ranks: engines that record per rank and repeat the same tokens on every rank (no a2a backend,
  no attention DP) are counted once by the readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.artifacts.routing_profile import RoutingProfile
from vibe_plan.defaults import BATCH_TOKENS
from vibe_plan.engines import DUMP_FORMATS, EngineDump, dump_format, read_dump, slot_map
from vibe_plan.engines.trtllm import fold_slots
from vibe_plan.errors import VibeError
from vibe_plan.model_config import MoeFacts, expert_meta, model_name, moe_facts, read_config


@dataclass
class ImportedRouting:
    profile: RoutingProfile
    notes: list[str] = field(default_factory=list)  # warnings for the user, in reading order


def import_routing_run(
    source: Path,
    fmt: str = "auto",
    model_dir: Path | None = None,
    batch_tokens: int = BATCH_TOKENS,
    placement: Path | None = None,
) -> ImportedRouting:
    """`placement`: the placement file the engine served with (TensorRT-LLM's load-balancer
    YAML, or any format `vibe_plan.engines.load_placement` reads), to fold slot counts back onto
    experts."""
    source = Path(source)
    if not source.exists():
        raise VibeError(f"{source} does not exist; pass the engine's dump file or folder")
    facts = None
    architecture = None
    if model_dir is not None:
        cfg = read_config(model_dir)
        facts = moe_facts(cfg, model_name(model_dir, cfg), f"{model_dir}/config.json")
        architecture = architecture_of(cfg)
    fmt = dump_format(source) if fmt == "auto" else fmt
    if placement is not None and fmt in DUMP_FORMATS and fmt != "trtllm":
        raise VibeError(
            f"--placement folds TensorRT-LLM's slot counts onto experts; {fmt} dumps count "
            "experts already: drop --placement"
        )
    dump = read_dump(source, fmt, facts.num_experts if facts else None, batch_tokens)
    ctx = _Import(fmt, facts, placement, list(dump.notes))
    profile = ctx.profile(dump, batch_tokens if fmt == "vllm" else None, architecture)
    return ImportedRouting(profile, ctx.notes)


def architecture_of(cfg: dict[str, Any]) -> str | None:
    """`architectures[0]` of a config.json (the class engines dispatch on), if it names one."""
    arch = cfg.get("architectures")
    if isinstance(arch, list) and arch and isinstance(arch[0], str) and arch[0]:
        return arch[0]
    return None


@dataclass
class _Import:
    engine: str
    facts: MoeFacts | None
    placement: Path | None
    notes: list[str]

    def profile(
        self, dump: EngineDump, batch_tokens: int | None, architecture: str | None
    ) -> RoutingProfile:
        facts = self.facts
        if facts is not None and dump.top_k and dump.top_k != facts.top_k:
            raise VibeError(
                f"the {self.engine} dump routes each token to {dump.top_k} experts (top-k "
                f"{dump.top_k}) but the model config's top-k is {facts.top_k}; is it a dump of "
                "this model?"
            )
        counts, layer_ids = self._layers(dump)
        if not layer_ids:
            raise VibeError(f"the {self.engine} dump records no expert loads (all counts are zero)")
        counts, folded = self._experts(counts, layer_ids)
        keep = counts.sum(axis=(1, 2)) > 0
        if not keep.any():
            raise VibeError(f"the {self.engine} dump records no expert loads (all counts are zero)")
        counts = counts[keep]  # unfilled buffer slots and idle passes carry no information
        top_k = facts.top_k if facts else dump.top_k
        source: dict[str, Any] = {
            "kind": "import",
            "engine": self.engine,
            "rows_dropped_empty": int((~keep).sum()),
            **dump.source,
        }
        if folded:
            source["slots_folded_with"] = folded
        meta: dict[str, Any] = {
            "model": facts.model if facts else f"unknown ({self.engine} dump)",
            "num_experts": int(counts.shape[2]),
            "top_k": int(top_k) if top_k else None,
            "num_hidden_layers": (
                facts.num_hidden_layers if facts else _layers_total(dump, layer_ids)
            ),
            "phase": "mixed",  # engines record prefill and decode passes together
            "batch_tokens": batch_tokens,
            "source": source,
        }
        if facts is not None:
            meta["model_type"] = facts.model_type
            meta["mtp_layers"] = facts.mtp_layers
            if architecture:
                meta["architecture"] = architecture
        if facts and facts.num_groups:
            meta["num_groups"] = facts.num_groups
        if facts is not None:
            meta.update(expert_meta(facts))
        if facts and facts.shared_experts:
            meta["shared_experts"] = {"count": facts.shared_experts}
        if meta["top_k"] is None:
            del meta["top_k"]
        return RoutingProfile(counts.astype(np.int64), np.asarray(layer_ids, np.int64), meta)

    # --- layers ---------------------------------------------------------------------------------

    def _layers(self, dump: EngineDump) -> tuple[np.ndarray, list[int]]:
        """The counts of the MoE layers only, and their decoder-layer ids."""
        counts = dump.counts
        if dump.layer_ids is not None:
            return self._named_layers(counts, list(dump.layer_ids))
        n_layers = counts.shape[1]
        facts = self.facts
        if dump.layer_axis == "decoder":
            if facts is not None:
                if n_layers == facts.num_hidden_layers:
                    self._dense_empty(
                        dump, [i for i in range(n_layers) if i not in facts.moe_layers]
                    )
                    self._no_repeats(dump, list(facts.moe_layers))
                    return counts[:, facts.moe_layers, :], list(facts.moe_layers)
                if self.engine == "vllm" and n_layers == len(facts.moe_layers):
                    self._no_repeats(dump, list(range(n_layers)))
                    return counts, list(facts.moe_layers)  # revisions with MoE layers only
                raise VibeError(
                    f"the {self.engine} dump has {n_layers} layers, the model has "
                    f"{facts.num_hidden_layers} decoder layers ({len(facts.moe_layers)} of them "
                    "MoE layers); is it a dump of this model?"
                )
            routed = counts.sum(axis=(0, 2)) > 0  # dense layers never route: all zero
            filler = [i for i in dump.filler_layers if routed[i]]
            layer_ids = [i for i in range(n_layers) if routed[i] and i not in filler]
            if filler and layer_ids:
                self.notes.append(
                    f"layers {_ids(filler)} send every token to expert 0 and nowhere else: "
                    f"{self.engine} fills dense layers that way (its array has a row per decoder "
                    "layer), so they are dropped as dense; pass --model to take the MoE layers "
                    "from the config"
                )
            else:
                layer_ids = [i for i in range(n_layers) if routed[i]]
            self._no_repeats(dump, layer_ids)
            return counts[:, layer_ids, :], layer_ids
        if facts is not None:  # an axis of MoE layers only
            if n_layers != len(facts.moe_layers):
                raise VibeError(
                    f"the {self.engine} dump has {n_layers} MoE layers, the model config "
                    f"{len(facts.moe_layers)}; is it a dump of this model?"
                )
            return counts, list(facts.moe_layers)
        self.notes.append(
            f"{self.engine} numbers MoE layers 0..{n_layers - 1}, not decoder layers; pass "
            "--model so the profile carries the real decoder-layer ids"
        )
        return counts, list(range(n_layers))

    def _dense_empty(self, dump: EngineDump, dense: list[int]) -> None:
        """Dense decoder layers route nothing: SGLang leaves them zero, vLLM fills them with
        expert 0 (its zeroed buffer). Counts beyond that mean the dump is not of this model.
        A dump with another expert count is refused by `_experts`, with that more telling reason."""
        if self.facts is not None and dump.counts.shape[2] != self.facts.num_experts:
            return
        counts = dump.counts[:, dense, :]
        if self.engine == "vllm":
            counts = counts[:, :, 1:]
        routed = [layer for li, layer in enumerate(dense) if counts[:, li].any()]
        if routed:
            raise VibeError(
                f"the {self.engine} dump has counts for decoder layers {_ids(routed)}, which "
                "are dense in the model config; is it a dump of this model?"
            )

    def _no_repeats(self, dump: EngineDump, axis: list[int]) -> None:
        """A router picks distinct experts for a token: a kept layer (axis-1 index) where a token
        lists one expert twice is a corrupt dump."""
        bad = [i for i in axis if i in dump.repeat_layers]
        if bad:
            raise VibeError(
                f"the {self.engine} dump lists the same expert twice for one token in layers "
                f"{_ids(bad)}; a router picks distinct experts: is the dump corrupt?"
            )

    def _named_layers(self, counts: np.ndarray, ids: list[int]) -> tuple[np.ndarray, list[int]]:
        """TensorRT-LLM's layers, keyed by decoder layer; its MTP layers come after the last
        decoder layer (`num_hidden_layers + i`) and are dropped."""
        facts = self.facts
        if facts is None:
            mtp = _mtp_suffix(counts, ids)
            if mtp:
                self.notes.append(
                    f"layers {_ids(mtp)} route a different number of tokens than the other MoE "
                    "layers of the same iterations: TensorRT-LLM's MTP (next-n) layers, numbered "
                    "num_hidden_layers + i; dropped (pass --model to take them from the config)"
                )
            self.notes.append(
                "no --model: the dump's layers and counts are taken as they are; with --model "
                "vibe checks them against the config (MTP layers, and slot counts when the run "
                "used TensorRT-LLM's load balancer)"
            )
        else:
            nh = facts.num_hidden_layers
            mtp = [i for i in ids if i >= nh]
            if mtp and not facts.mtp_layers:
                raise VibeError(
                    f"the {self.engine} dump has layers {_ids(mtp)} but the model has {nh} "
                    "decoder layers and no MTP layers; is it a dump of this model?"
                )
            beyond = [i for i in mtp if i >= nh + facts.mtp_layers]
            if beyond:
                raise VibeError(
                    f"the {self.engine} dump has layers {_ids(beyond)} but the model has {nh} "
                    f"decoder layers and {facts.mtp_layers} MTP layers (layers {nh}.."
                    f"{nh + facts.mtp_layers - 1}); is it a dump of this model?"
                )
            if mtp:
                self.notes.append(
                    f"layers {_ids(mtp)} are the MTP (next-n) layers TensorRT-LLM numbers "
                    f"num_hidden_layers + i (the model has {nh} decoder layers); dropped"
                )
            dense = [i for i in ids if i < nh and i not in facts.moe_layers]
            if dense:
                raise VibeError(
                    f"the {self.engine} dump has counts for decoder layers {_ids(dense)}, which "
                    "are dense in the model config; is it a dump of this model?"
                )
            absent = [i for i in facts.moe_layers if i not in ids]
            if absent:
                self.notes.append(
                    f"the dump has no counts for MoE layers {_ids(absent)}; they are left out of "
                    "the profile"
                )
        keep = [li for li, layer in enumerate(ids) if layer not in mtp]
        return counts[:, keep, :], [ids[li] for li in keep]

    # --- experts --------------------------------------------------------------------------------

    def _experts(self, counts: np.ndarray, layer_ids: list[int]) -> tuple[np.ndarray, str | None]:
        """Counts per logical expert: slot counts folded through `--placement`, sizes checked
        against the model config. Returns the counts and the file folded with, if any."""
        facts = self.facts
        width = int(counts.shape[2])
        if self.placement is not None:
            phy2log, experts = slot_map(
                self.placement,
                layer_ids,
                facts.num_experts if facts else None,
                facts.num_hidden_layers if facts else None,
            )
            slots = int(phy2log.shape[1])
            if width == slots:
                return fold_slots(counts, phy2log, experts), Path(self.placement).name
            if width == experts:
                self.notes.append(
                    f"the dump counts {width} experts, not the {slots} slots of "
                    f"{self.placement} (the load balancer was off): --placement is not needed "
                    "and was not used"
                )
                return counts, None
            raise VibeError(
                f"the {self.engine} dump has {width} counts per layer but {self.placement} has "
                f"{slots} slots for {experts} experts; pass the load-balancer file the run "
                "served with"
            )
        if facts is not None and width != facts.num_experts:
            if self.engine == "trtllm" and width > facts.num_experts:
                raise VibeError(
                    f"the {self.engine} dump has {width} counts per layer but the model has "
                    f"{facts.num_experts} experts: statistics recorded with TensorRT-LLM's load "
                    f"balancer count its {width} slots; pass --placement with the load-balancer "
                    "file the run used (moe_config.load_balancer) to fold them onto experts"
                )
            raise VibeError(
                f"the {self.engine} dump has {width} experts per layer, the model config "
                f"{facts.num_experts}; is it a dump of this model?"
            )
        return counts, None


def _mtp_suffix(counts: np.ndarray, ids: list[int]) -> list[int]:
    """The last layers, if they alone route other token totals than the first layer in some
    iteration: every decoder MoE layer of an iteration routes the same tokens (x top-k); MTP
    layers route the draft's."""
    sums = counts.sum(axis=2)  # [rows, layers]
    sums = sums[(sums > 0).all(axis=1)]  # iterations with a count in every layer
    if len(sums) == 0 or len(ids) < 2:
        return []
    agree = (sums == sums[:, :1]).all(axis=0)
    if agree.all():
        return []
    first_off = int(np.argmin(agree))
    if agree[first_off:].any() or len(ids) - first_off > max(1, len(ids) // 4):
        return []  # the disagreement is not a short suffix: not MTP layers
    return ids[first_off:]


def _layers_total(dump: EngineDump, layer_ids: list[int]) -> int:
    if dump.layer_axis == "decoder" and dump.layer_ids is None:
        return int(dump.counts.shape[1])
    return int(max(layer_ids)) + 1


def _ids(layers: list[int]) -> str:
    """A short list of layer ids for a message."""
    shown = ", ".join(str(i) for i in layers[:8])
    return f"[{shown}{', ...' if len(layers) > 8 else ''}]"
