"""``miaudit defend``: one dataset and architecture, several defenses, several attacks, one comparison.

For every defense the target, shadow and reference models come from one
:class:`~miaudit.classifier.experiment.ClassifierExperiment`, the one ``miaudit audit`` uses: the
target is trained on the same members with the same initial seed, and the attacks are adaptive:
shadow and reference models are trained with the same defense (the chain's training plugins,
fresh for every model) and the same output post-processor is applied to their outputs, each
fitted on that model's own members and unseen data. The undefended row (``name: none``) thus
scores exactly what ``miaudit audit`` scores on the same dataset, split, training, shadow,
reference, attacks and seed. Defenses with the same training part (e.g. ``none`` and
``memguard``) share their trained models. Everything is checked before any training.

Output folder (built atomically): ``defenses.json``, ``defenses.md``, ``privacy_utility.png``,
``config.yaml``, ``log.txt`` and ``scores/<defense>/<attack>.{scores.npz,json}``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml

from miaudit import __version__
from miaudit.attacks.base import Attack, access_allows
from miaudit.classifier.config import ReferenceConfig, ShadowConfig
from miaudit.classifier.experiment import ClassifierExperiment, ExperimentModels, ModelOutputs
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.queried import QueriedScores, signal_type
from miaudit.classifier.reference.data import AttackReference, ReferencePool, ShadowData
from miaudit.classifier.targets import TorchClassifierTarget
from miaudit.classifier.training import TrainConfig
from miaudit.config import from_dict, load_yaml, refuse_nested_seed, resolved_without_seed, to_dict
from miaudit.data import ArrayDataset
from miaudit.defenses.base import DefenseContext, n_classes_of
from miaudit.defenses.registry import DefenseChain, build_chain
from miaudit.defenses.report import render_defense_html
from miaudit.errors import ConfigError, DataError, MiauditError
from miaudit.evaluation import AttackResult, evaluate
from miaudit.evaluation.epsilon import DEFAULT_DELTA, empirical_epsilon
from miaudit.evaluation.run_result import strongest
from miaudit.report.markdown import md_code, md_text
from miaudit.runs.config import AttackSpec, DatasetConfig, EvaluationConfig, check_attack_specs
from miaudit.runs.pipeline import build_attacks
from miaudit.utils.atomic import atomic_output_dir
from miaudit.utils.jsonable import json_default
from miaudit.utils.logs import progress as progress_bar
from miaudit.utils.logs import run_log
from miaudit.utils.seed import derive_seed

log = logging.getLogger(__name__)


# -- configuration ------------------------------------------------------------------------------
@dataclass
class DefenseComponent:
    """One defense of a composition: registry ``name`` and its ``params``."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DefenseSpec:
    """A row of the comparison: one defense (``name`` + ``params``) or several (``compose``).

    ``name: none`` is the undefended model. ``label`` names the row (default: the name, or the
    composed names joined by ``+``). ``training`` overrides keys of the top-level recipe for this
    defense's target, shadow and reference models (e.g. ``{lr: 0.005}`` for DP-SGD); the
    architecture stays the same. In a config a bare name stands for ``{name: ...}`` (``defenses: [none,
    label_smoothing]``).
    """

    NAME_SHORTHAND: ClassVar[str] = "name"

    name: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    compose: list[DefenseComponent] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        fixed = sorted(set(self.training) & {"model", "hidden", "model_options", "seed", "device"})
        if fixed:
            raise ConfigError(f"config.defenses: training.{fixed[0]} cannot change per defense (the comparison is "
                              "of one architecture); change the top-level 'training'")
        if (self.name is None) == (not self.compose):
            raise ConfigError("config.defenses: give each entry either 'name' (with optional 'params') or "
                              "'compose' (a list of {name, params})")
        if self.compose and self.params:
            raise ConfigError("config.defenses: put 'params' inside each 'compose' item, not beside 'compose'")

    @property
    def key(self) -> str:
        return self.label or self.name or "+".join(c.name for c in self.compose)

    def components(self) -> list[tuple[str, dict[str, Any]]]:
        if self.name is not None:
            return [(self.name, dict(self.params))]
        return [(c.name, dict(c.params)) for c in self.compose]


@dataclass
class DefendSplit:
    """Disjoint parts of the dataset: audited members / non-members, shadow data, population data
    (population attacks, RMIA's z), and ``n_reference`` examples the defender holds (reference set
    of adversarial regularisation, DMP's transfer set, validation split, MemGuard's non-members)."""

    n_members: int
    n_nonmembers: int
    n_shadow: int = 0
    n_population: int = 0
    n_reference: int = 0

    def __post_init__(self) -> None:
        for name in ("n_members", "n_nonmembers", "n_shadow", "n_population", "n_reference"):
            if getattr(self, name) < 0:
                raise ConfigError(f"config.split.{name}: must be >= 0, got {getattr(self, name)}")
        if not self.n_members or not self.n_nonmembers:
            raise ConfigError("config.split: n_members and n_nonmembers must be positive")


@dataclass
class DefendConfig:
    """A privacy-utility comparison of defenses (see ``docs/defenses.md``).

    ``isolate_training``: on CPU, train each defense's target in a fresh process, so its peak
    memory is its own (a process's peak RSS never goes down, and freed memory is reused); costs
    one interpreter start per defense. On CUDA the allocator's peak is measured in process.
    """

    dataset: DatasetConfig
    split: DefendSplit
    defenses: list[DefenseSpec]
    attacks: list[AttackSpec]
    seed: int = 0
    training: TrainConfig = field(default_factory=TrainConfig)
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    isolate_training: bool = True

    def __post_init__(self) -> None:
        check_attack_specs(self.attacks)
        if not self.defenses:
            raise ConfigError("config.defenses: list at least one defense (e.g. {name: none})")
        keys = [d.key for d in self.defenses]
        for key in keys:
            if keys.count(key) > 1:
                raise ConfigError(f"config.defenses: {key!r} appears twice; give each repeat a distinct 'label'")
            if not key.replace("_", "").replace("-", "").replace("+", "").replace(".", "").isalnum():
                raise ConfigError(f"config.defenses: label {key!r} must use only letters, digits, '_', '-', '+', "
                                  "'.' (it names files)")
        if self.shadow.n_models and not self.split.n_shadow:
            raise ConfigError("config.split.n_shadow: shadow models need shadow data; give a positive size")
        if self.reference.views != "none":
            raise ConfigError("config.reference.views: miaudit defend scores plain queries only; set views: none")


def parse_defend_config(source: dict[str, Any] | str | Path, *, data_dir: str | None = None) -> DefendConfig:
    """Strict parse of a mapping or YAML file; ``training.seed`` is refused (the top-level ``seed`` drives all)."""
    data = dict(load_yaml(source) if isinstance(source, (str, Path)) else source)
    refuse_nested_seed(data, "training")
    if data_dir is not None:
        if not isinstance(data.get("dataset"), dict):
            raise ConfigError("--data-dir was given but the config has no 'dataset' mapping to apply it to")
        data["dataset"] = {**data["dataset"], "data_dir": str(data_dir)}
    return from_dict(DefendConfig, data)


# -- trained models (shared by defenses with the same training part) ----------------------------
@dataclass
class _Row:
    """One defense of the comparison: its checked chain and its training recipe (seed set per model)."""

    chain: DefenseChain
    recipe: TrainConfig

    @property
    def label(self) -> str:
        return self.chain.label

    def key(self) -> str:
        """Rows with equal keys train identical models (they differ only in post-processing)."""
        return json.dumps([to_dict(dataclasses.replace(self.recipe, seed=0)), self.chain.training_key()],
                          sort_keys=True, default=str)


@dataclass
class _Trained:
    """The models of one training part (:class:`~miaudit.classifier.experiment.ExperimentModels`) and the
    target's training cost for ``defenses.json``."""

    models: ExperimentModels
    target_info: dict[str, Any]


class _Run:
    """One comparison: the classifier experiment (data, split, checked attacks), the defender's held-out
    data, and the models trained for each training part."""

    def __init__(self, config: DefendConfig, attacks: list[tuple[str, Attack]], *, progress: bool):
        self.config = config
        self.progress = progress
        self.experiment = ClassifierExperiment.from_config(config, attacks, isolate_training=config.isolate_training,
                                                           measure_memory=True, progress=progress)
        dataset, split = self.experiment.dataset, self.experiment.split
        assert dataset is not None and split is not None  # defend trains its target on a dataset's split
        self.dataset: ArrayDataset = dataset
        used = np.concatenate([split.audited, split.shadow, split.population])
        free = np.setdiff1d(np.arange(len(self.dataset)), used)
        n_reference = config.split.n_reference
        if n_reference > free.size:
            raise DataError(f"split.n_reference={n_reference} but only {free.size} examples of "
                            f"{self.dataset.name} are left after the other parts; lower the sizes")
        rng = np.random.default_rng(derive_seed(config.seed, "defense-reference"))
        reference_index = np.sort(rng.permutation(free)[:n_reference])
        self.reference = self.dataset.subset(reference_index) if n_reference else None
        self.cache: dict[str, _Trained] = {}

    def row(self, spec: DefenseSpec) -> _Row:
        """Build and check ``spec``'s defenses against its recipe (raises before any training)."""
        try:
            recipe = dataclasses.replace(self.config.training, **spec.training)
        except TypeError as exc:
            raise ConfigError(f"config.defenses[{spec.key!r}].training: {exc}") from None
        context = DefenseContext(recipe, self.dataset.input_shape, n_classes_of(self.dataset),
                                 self.experiment.train_sizes, self.reference)
        return _Row(build_chain(spec.components(), context, label=spec.key), recipe)

    def trained(self, row: _Row) -> tuple[_Trained, bool]:
        """The models of ``row``'s training part (trained now, or shared with an earlier defense)."""
        key = row.key()
        if key in self.cache:
            return self.cache[key], True
        models = self.experiment.run(recipe=row.recipe, plugins=row.chain.plugins, unseen=self.reference,
                                     member_outputs=True, label=row.label)
        for warning in models.warnings:
            log.warning("[%s] %s", row.label, warning)
        record, target = models.target.training, models.target.model
        assert record is not None and isinstance(target, TorchClassifierTarget)  # trained by the experiment
        module = target.model
        info = {"train_seconds": round(record["seconds"], 3), "peak_memory_mb": round(record["peak_memory_mb"], 1),
                "memory_source": record["memory_source"], "final_train_loss": record["history"][-1]["loss"],
                "epochs": len(record["history"]), "n_parameters": int(sum(p.numel() for p in module.parameters())),
                "model_class": type(module).__name__, "recipe": to_dict(row.recipe),
                "reports": {k: v for k, v in record["reports"].items() if v}}
        self.cache[key] = _Trained(models, info)
        return self.cache[key], False

    # -- one defense ---------------------------------------------------------------------------
    def evaluate_defense(self, row: _Row, attacks: list[tuple[str, Attack]], folder: Path, *,
                         epsilon_delta: float | None = None) -> dict[str, Any]:
        chain = row.chain
        trained, shared = self.trained(row)
        models = trained.models
        start = time.perf_counter()
        outputs, reference = _defended(chain, models, derive_seed(self.config.seed, "postprocess", chain.label))
        postprocess_seconds = time.perf_counter() - start
        membership = models.target.membership
        info = dict(trained.target_info)
        info.update(train_accuracy=float(outputs.correctness[membership].mean()),
                    test_accuracy=float(outputs.correctness[~membership].mean()),
                    postprocess_seconds=round(postprocess_seconds, 3), access=outputs.access,
                    shared_training=shared, seconds_all_models=models.seconds)
        epsilon = next((r for r in info["reports"].values() if "epsilon" in r), None)
        base = to_dict(self.config.training)
        overrides = {k: v for k, v in to_dict(row.recipe).items() if k != "seed" and base[k] != v}
        queried = models.queried(attacks)
        delta = epsilon_delta if epsilon_delta is not None else ((epsilon or {}).get("delta") or DEFAULT_DELTA)
        rows = [self._attack(key, attack, reference, outputs, models, queried.get(key), chain, folder,
                             delta=float(delta)) for key, attack in attacks]
        return {"label": chain.label, "components": chain.components(), "training_overrides": overrides,
                "notes": chain.notes, "target": info,
                "epsilon": epsilon["epsilon"] if epsilon else None, "delta": epsilon["delta"] if epsilon else None,
                "attacks": rows}

    def _attack(self, key: str, attack: Attack, reference: AttackReference, outputs: ClassifierOutputs,
                models: ExperimentModels, queried: QueriedScores | None, chain: DefenseChain, folder: Path, *,
                delta: float) -> dict[str, Any]:
        """One attack's row of a defense: metrics with CIs and the empirical epsilon bound at ``delta``."""
        cls = type(attack)
        row: dict[str, Any] = {"name": key, "attack": cls.name, "access": cls.access,
                               "needs_reference": cls.needs_reference}
        if queried is not None:  # queries the model itself: labels (kept by every post-processor) or weights
            scores, attack, seconds = queried.scores, queried.attack, queried.seconds
            row["note"] = ("queries the model's labels on perturbed inputs, which the output post-processors keep "
                           "(rounding up to ties)" if cls.access == "label-only"
                           else "white-box: reads the weights, so output post-processors do not apply")
        elif not access_allows(outputs.access, cls.access):
            row.update(applicable=False,
                       reason=f"needs {cls.access} outputs; the defended model gives {outputs.access}")
            return row
        else:
            start = time.perf_counter()
            try:
                scores = attack.fit(reference).score(outputs)
            except MiauditError as exc:
                log.warning("[%s] attack %s failed: %s", chain.label, key, exc)
                row.update(applicable=True, error=str(exc))
                return row
            seconds = time.perf_counter() - start
        ev = self.config.evaluation
        membership = models.target.membership
        metrics = evaluate(membership, scores, threshold=attack.decision_threshold, fprs=tuple(ev.fprs),
                           n_bootstrap=ev.n_bootstrap, confidence=ev.confidence,
                           seed=derive_seed(self.config.seed, "bootstrap"))
        row.update(applicable=True, seconds=round(seconds, 3), params=attack.get_params(), **metrics)
        AttackResult(key, models.target.ids, membership.astype(np.int64), scores, attack.get_params(),
                     metrics).save(folder / "scores" / chain.label)
        row["empirical_epsilon"] = empirical_epsilon(membership, scores, delta=delta,
                                                     confidence=ev.confidence).to_dict()
        return row


def _defended(chain: DefenseChain, models: ExperimentModels, seed: int) -> tuple[ClassifierOutputs, AttackReference]:
    """The target's outputs and the attacks' reference data as the defended deployment answers.

    Without post-processors these are the experiment's own (so ``name: none`` gives what
    ``miaudit audit`` gives); otherwise the chain's post-processors are applied to every model's
    outputs (adaptive attacks), each fitted on that model's own members and unseen data.
    """
    if not chain.outputs:
        return models.target.outputs, models.reference
    target = _defend(chain, models.target_outputs, seed, with_population=True)
    shadow = None
    if models.shadow:
        shadow = ShadowData([_defend(chain, raw, seed + 1 + m).scored for m, raw in enumerate(models.shadow)],
                            [raw.membership for raw in models.shadow])
    pool = None
    if models.pool is not None:
        defended = [_defend(chain, raw, seed + 1000 + j, with_population=True)
                    for j, raw in enumerate(models.pool_outputs())]
        population = [d.population for d in defended if d.population is not None]
        pool = ReferencePool([d.scored for d in defended], models.pool.keep, population or None)
    return target.scored, AttackReference(shadow=shadow, pool=pool, population=target.population)


def _defend(chain: DefenseChain, raw: ModelOutputs, seed: int, *, with_population: bool = False) -> ModelOutputs:
    """Apply ``chain``'s post-processors (fresh, fitted on this model's members vs unseen outputs)."""
    out = dataclasses.replace(raw, population=raw.population if with_population else None)
    for k, post in enumerate(chain.postprocessors()):
        if post.requires_fit:  # on data only the defender holds (checked by the chain) and the model's members
            assert out.members is not None and out.unseen is not None
            post.fit(out.members, out.unseen, seed=seed)

        def apply(o: ClassifierOutputs, post: Any = post, k: int = k) -> ClassifierOutputs:
            return post.apply(o, seed=seed + 7919 * (k + 1))

        out = ModelOutputs(apply(out.scored), out.membership, apply(out.members) if out.members is not None else None,
                           apply(out.unseen) if out.unseen is not None else None,
                           apply(out.population) if out.population is not None else None)
    return out


# -- checks before training ---------------------------------------------------------------------
def _check_chains(config: DefendConfig, chains: list[DefenseChain], attacks: list[tuple[str, Attack]]) -> None:
    """Every defense leaves some attack usable, and its training plugins can run on the reference executor."""
    for chain in chains:
        usable = [k for k, a in attacks if signal_type(a)
                  or access_allows(chain.output_access, a.access)]
        if not usable:
            raise ConfigError(f"defense {chain.label!r} returns {chain.output_access} outputs and none of the attacks "
                              "can use them; add a label-only attack (e.g. correctness)")
        if chain.training and config.reference.n_models and config.reference.executor == "vectorised":
            raise ConfigError(f"defense {chain.label!r} has training plugins, which the vectorised reference executor "
                              "does not run; use reference.executor 'sequential', 'process' or 'ray'")


def prepare(config: DefendConfig, *, progress: bool = True) -> tuple[_Run, list[_Row]]:
    """Load data, build and check every defense and attack; raises before any training."""
    attacks = build_attacks(config.attacks, kind="classifier", seed=config.seed)
    run = _Run(config, attacks, progress=progress)
    rows = [run.row(spec) for spec in config.defenses]
    _check_chains(config, [r.chain for r in rows], attacks)
    return run, rows


def run_defense_comparison(config: DefendConfig | dict[str, Any] | str | Path, out_dir: str | Path, *,
                           overwrite: bool = False, progress: bool = True,
                           epsilon_delta: float | None = None) -> dict[str, Any]:
    """Run the comparison ``config`` describes and write its complete folder at ``out_dir`` (``defenses.json``
    with every attack's metrics and empirical epsilon, ``defenses.md``, ``privacy_utility.png``,
    ``report.html``); return ``defenses.json``. ``epsilon_delta``: delta of the empirical epsilon bounds
    (default: each defense's DP accountant delta, else 1e-5)."""
    if not isinstance(config, DefendConfig):
        config = parse_defend_config(config)
    run, rows = prepare(config, progress=progress)
    start = time.perf_counter()
    with atomic_output_dir(out_dir, overwrite=overwrite) as folder, run_log(folder, quiet=not progress):
        log.info("miaudit %s: comparing %d defenses x %d attacks on %s (%s) -> %s", __version__, len(rows),
                 len(config.attacks), run.dataset.name, config.training.model, out_dir)
        for note in (n for row in rows for n in row.chain.notes):
            log.info("note: %s", note)
        entries = []
        for row in progress_bar(rows, desc="defenses", enabled=progress, unit="defense"):
            attacks = build_attacks(config.attacks, kind="classifier", seed=config.seed)
            entries.append(run.evaluate_defense(row, attacks, folder, epsilon_delta=epsilon_delta))
            _log_entry(entries[-1])
        result = {
            "version": 1, "kind": "defenses", "miaudit_version": __version__, "seed": config.seed,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config": _resolved(config),
            "data": {"dataset": run.dataset.name, "n_examples": len(run.dataset), "n_classes": run.dataset.n_classes,
                     "n_members": config.split.n_members, "n_nonmembers": config.split.n_nonmembers,
                     "n_shadow": config.split.n_shadow, "n_population": config.split.n_population,
                     "n_reference": config.split.n_reference},
            "evaluation": {"n_bootstrap": config.evaluation.n_bootstrap, "confidence": config.evaluation.confidence,
                           "fprs": list(config.evaluation.fprs)},
            "defenses": entries, "warnings": [w for w in (config.evaluation.interval_warning(),) if w],
            "seconds": round(time.perf_counter() - start, 2),
        }
        (folder / "defenses.json").write_text(json.dumps(result, indent=2, default=json_default))
        (folder / "config.yaml").write_text(yaml.safe_dump(result["config"], sort_keys=False))
        (folder / "defenses.md").write_text(render_markdown(result))
        plot_privacy_utility(result, folder / "privacy_utility.png")
        (folder / "report.html").write_text(render_defense_html(folder, result), encoding="utf-8")
        log.info("wrote %s in %.1f s", out_dir, result["seconds"])
    return result


def _resolved(config: DefendConfig) -> dict[str, Any]:
    return resolved_without_seed(config, "training")


def _log_entry(entry: dict[str, Any]) -> None:
    t = entry["target"]
    strongest = strongest_attack(entry)
    eps = f", epsilon {entry['epsilon']:.2f}" if entry["epsilon"] is not None else ""
    tail = (f"; strongest attack {strongest['name']}: AUC {strongest['auc']:.3f}, TPR@1%FPR "
            f"{strongest['tpr_at_fpr'].get('0.01', float('nan')):.3f}" if strongest else "")
    log.info("[%s] test accuracy %.4f (train %.4f)%s%s", entry["label"], t["test_accuracy"], t["train_accuracy"], eps,
             tail)


# -- summaries ----------------------------------------------------------------------------------
def strongest_attack(entry: dict[str, Any], fpr: str = "0.01") -> dict[str, Any] | None:
    """A defense row's strongest attack at ``fpr``, by the one rule of
    :func:`miaudit.evaluation.run_result.strongest`."""
    best = strongest(entry["attacks"], f"tpr@{fpr}")
    return best.fields if best is not None else None


def _ci(value: float, ci: list[float] | None) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def render_markdown(result: dict[str, Any]) -> str:
    """``defenses.md``: a utility / cost table and an attack table (CIs from the stratified bootstrap)."""
    cfg, data, ev = result["config"], result["data"], result["evaluation"]
    tr = cfg["training"]
    level = int(round(100 * ev["confidence"]))
    lines = [
        f"# Defense comparison: {md_text(data['dataset'])}, {md_text(tr['model'])}", "",
        f"{data['n_members']} members / {data['n_nonmembers']} non-members audited; shadow data {data['n_shadow']}, "
        f"population {data['n_population']}, defender's reference data {data['n_reference']}. Training: "
        f"{tr['epochs']} epochs, {tr['optimizer']}, lr {tr['lr']:g}, batch {tr['batch_size']}, weight decay "
        f"{tr['weight_decay']:g}. Shadow models: {cfg['shadow']['n_models']}, reference models: "
        f"{cfg['reference']['n_models']}, all trained with the defense (adaptive attacks). Seed {result['seed']}; "
        f"{level}% CIs from {ev['n_bootstrap']} stratified bootstrap resamples. miaudit {result['miaudit_version']}, "
        f"{result['seconds']:.0f} s in total.", "",
        "## Utility and cost", "",
        "| defense | test acc | train acc | epsilon (delta) | train time (s) | peak memory (MB) | strongest attack "
        "(TPR@1%FPR) | AUC of it |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in result["defenses"]:
        t = e["target"]
        eps = f"{e['epsilon']:.2f} ({e['delta']:g})" if e["epsilon"] is not None else "-"
        s = strongest_attack(e)
        strong = "- | -"
        if s and "0.01" in s["tpr_at_fpr"]:
            strong = f"{md_code(s['name'])} ({s['tpr_at_fpr']['0.01']:.3f}) | {s['auc']:.3f}"
        shared = " (shared)" if t["shared_training"] else ""
        lines.append(f"| {md_text(e['label'])} | {t['test_accuracy']:.4f} | {t['train_accuracy']:.4f} | {eps} | "
                     f"{t['train_seconds']:.1f}{shared} | {t['peak_memory_mb']:.0f} | {strong} |")
    fprs = [f"{f:g}" for f in ev["fprs"]]
    low = [f for f in fprs if f in ("0.001", "0.01")] or fprs[:2]
    lines += ["", "## Attacks", "",
              "Attack accuracy and precision / recall / F1 use the attack's own threshold where it learns one "
              "(shadow models) and the best threshold on the audited labels otherwise (marked *oracle*).", "",
              "| defense | attack | AUC | " + " | ".join(f"TPR@{float(f) * 100:g}%FPR" for f in low)
              + " | attack acc | P / R / F1 macro | P / R / F1 weighted |",
              "|---|---|---|" + "---|" * len(low) + "---|---|---|"]
    for e in result["defenses"]:
        for a in e["attacks"]:
            if "auc" not in a:
                why = a.get("reason") or f"error: {a.get('error')}"
                lines.append(f"| {md_text(e['label'])} | {md_code(a['name'])} | n/a: {md_text(why)} |"
                             + " |" * (len(low) + 3))
                continue
            tprs = " | ".join(_ci(a["tpr_at_fpr"][f], a["tpr_at_fpr_ci"].get(f)) for f in low)
            oracle = " (oracle)" if a["threshold_source"] == "oracle" else ""
            lines.append(f"| {md_text(e['label'])} | {md_code(a['name'])} | {_ci(a['auc'], a['auc_ci'])} | {tprs} | "
                         f"{a['accuracy']:.3f}{oracle} | {a['precision_macro']:.3f} / {a['recall_macro']:.3f} / "
                         f"{a['f1_macro']:.3f} | {a['precision_weighted']:.3f} / {a['recall_weighted']:.3f} / "
                         f"{a['f1_weighted']:.3f} |")
    notes = [f"- {md_text(e['label'])}: training with "
             + md_text(', '.join(f'{k}={v}' for k, v in e['training_overrides'].items()))
             for e in result["defenses"] if e["training_overrides"]]
    notes += [f"- [{md_text(e['label'])}] {md_text(n)}" for e in result["defenses"] for n in e["notes"]]
    notes += sorted({f"- {md_code(a['name'])}: {md_text(a['note'])}" for e in result["defenses"] for a in e["attacks"]
                     if a.get("note")})
    warnings = result.get("warnings", []) + sorted({w for e in result["defenses"] for a in e["attacks"]
                                                    for w in a.get("warnings", [])})
    if notes or warnings:
        lines += ["", "## Notes", "", *notes, *[f"- {md_text(w)}" for w in warnings]]
    lines += ["", "Defenses, parameters and citations: `defenses.json`; plot: `privacy_utility.png`.", ""]
    return "\n".join(lines)


def plot_privacy_utility(result: dict[str, Any], path: str | Path, fpr: str = "0.01") -> Path:
    """Test accuracy against the strongest attack's TPR at ``fpr`` (with its CI), one point per defense."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 5.0))
    for e in result["defenses"]:
        s = strongest_attack(e, fpr)
        if s is None or fpr not in s["tpr_at_fpr"]:
            continue
        x, (lo, hi) = s["tpr_at_fpr"][fpr], s["tpr_at_fpr_ci"].get(fpr, [s["tpr_at_fpr"][fpr]] * 2)
        y = e["target"]["test_accuracy"]
        ax.errorbar([x], [y], xerr=[[x - lo], [hi - x]], fmt="o", capsize=3)
        ax.annotate(e["label"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axvline(float(fpr), color="grey", linestyle="--", linewidth=1, label=f"chance (TPR = FPR = {float(fpr):g})")
    ax.set_xlabel(f"TPR at {float(fpr) * 100:g}% FPR of the strongest attack (higher = leaks more)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Privacy-utility: {result['data']['dataset']}, {result['config']['training']['model']}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


__all__ = ["DefendConfig", "DefendSplit", "DefenseComponent", "DefenseSpec", "parse_defend_config",
           "plot_privacy_utility", "prepare", "render_markdown", "run_defense_comparison", "strongest_attack"]
