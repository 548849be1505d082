"""`storyloop study generate`: every model arm's image for every scenario and seed index of a study.

Seed index i of a scenario is the same seed in every arm (it depends on the study, the scenario and i, never
the arm), so arms differ only by their model. Each arm loads and samples exactly as `generate run` does
(generation/run.py: `load_round_model`, `encode_scenario`, `sample_images`), with the arm's reference-guidance
scale. Resumable: an (arm, scenario, seed index) already stored is skipped; each image is committed as soon as
it is made. Scenarios are sharded over accelerate processes, like generate_round. Images are stored as bare
PNGs (studies/images.py). Folder arms were stored at `study create`: nothing to do here.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace

from accelerate import PartialState
from accelerate.utils import gather_object, parse_flag_from_env
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from tqdm.auto import tqdm

from storyloop.db import read_scope, session_scope
from storyloop.db.assets import inspect_bytes, put_image
from storyloop.db.models import ArmKind, Scenario, Study, StudyArm, StudyImage
from storyloop.generation.errors import ModelError
from storyloop.generation.gsa import POSITION_SCHEME
from storyloop.generation.memory import apply_memory_plan, check_dtype, encoders_on
from storyloop.generation.memory_estimate import Workload
from storyloop.generation.models import latent_grid
from storyloop.generation.run import (GenerateConfig, _check_references, candidate_seed, encode_scenario,
                                      load_round_model, sample_images)
from storyloop.generation.training import memory_plan, peak_gb
from storyloop.settings import Settings
from storyloop.studies.errors import StudyError
from storyloop.studies.images import clean_png


@dataclass
class StudyGenerateSummary:
    generated: int
    skipped: int  # already stored
    scenarios: int
    seconds: float
    processes: int = 1
    fingerprints: dict[str, str] = field(default_factory=dict)  # model arm -> what its images record
    peak_gb: float | None = None

    def as_json(self) -> dict:
        return asdict(self)


def get_study(session, name: str) -> Study:
    study = session.scalar(select(Study).where(Study.name == name))
    if study is None:
        raise StudyError(f"no study named {name!r}")
    return study


def study_seed(study: Study, scenario_key: str, seed_index: int) -> int:
    """The seed of a scenario's seed index in every arm of the study."""
    return candidate_seed(study.base_seed, f"study:{study.name}", scenario_key, seed_index)


def generate_study(settings: Settings, name: str, config: GenerateConfig, dtype=None,
                   progress: bool = True) -> StudyGenerateSummary:
    """Images for every model arm of study `name`; `config.num_candidates` and reference-guidance scales are
    the study's and the arm's, whatever they hold. `dtype` None: bfloat16 on a GPU, float32 on a CPU."""
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    with read_scope(settings.db_url) as session:
        study = get_study(session, name)
        arms = [a for a in study.arms if a.kind is ArmKind.model]
        scenarios = list(session.scalars(select(Scenario).where(Scenario.round_id == study.round_id)
                                         .order_by(Scenario.id)))
        for sc in scenarios:
            _ = [r.asset for r in sc.references]
        _check_references(settings, scenarios)
        stored = set(session.execute(select(StudyImage.arm_id, StudyImage.scenario_id, StudyImage.seed_index)
                                     .join(StudyArm).where(StudyArm.study_id == study.id)).all())
    start = time.perf_counter()
    mine = scenarios[state.process_index::state.num_processes]
    done = skipped = 0
    fingerprints: dict[str, str] = {}
    todo = {(a.id, sc.id): [i for i in range(study.seeds) if (a.id, sc.id, i) not in stored] for a in arms
            for sc in scenarios}
    bar = tqdm(total=sum(len(todo[a.id, sc.id]) for a in arms for sc in mine), unit="img",
               desc=f"study {name}", disable=not (progress and state.is_main_process))
    for arm in arms:
        work = [sc for sc in mine if todo[arm.id, sc.id]]
        skipped += sum(study.seeds - len(todo[arm.id, sc.id]) for sc in mine)
        if not work:
            continue
        arm_config = replace(config, num_candidates=study.seeds,
                             reference_guidance_scales=(arm.reference_guidance_scale,))
        made, fingerprints[arm.name] = _generate_arm(settings, state, study, arm, work, todo, arm_config, dtype, bar)
        done += made
    state.wait_for_everyone()
    bar.close()
    shares = [(done, skipped, len(mine), peak_gb(state.device), fingerprints)]
    if state.num_processes > 1:
        shares = gather_object(shares)
    peaks = [s[3] for s in shares if s[3] is not None]
    return StudyGenerateSummary(sum(s[0] for s in shares), sum(s[1] for s in shares), sum(s[2] for s in shares),
                                time.perf_counter() - start, state.num_processes,
                                {k: v for s in shares for k, v in s[4].items()},
                                round(max(peaks), 3) if peaks else None)


def _generate_arm(settings: Settings, state: PartialState, study: Study, arm: StudyArm, work: list[Scenario],
                  todo: dict, config: GenerateConfig, dtype, bar) -> tuple[int, str]:
    """One model arm's missing images of this process's scenarios; (stored, model fingerprint)."""
    refs = max((len(sc.references) for sc in work), default=0)
    plan = memory_plan(config.memory, config.quantization, arm.base_model, "generate", state.device,
                       Workload(config.height, config.width, refs, config.batch_size, 16, config.max_sequence_length))
    dtype = plan.torch_dtype if dtype is None else dtype
    check_dtype(dtype)
    if arm.dpo_lora_path and not config.use_reference_cache:
        raise ModelError("--no-cache is not available with a DPO LoRA: references must go through the "
                         "Stage-1 model only, as in DPO training")
    loaded = load_round_model(arm, dtype=dtype, device=state.device, quantization=plan.quantization,
                              label=f"arm {arm.name!r} of study {study.name!r}")
    pipe, grid = loaded.pipe, latent_grid(loaded.pipe, config.height, config.width)
    apply_memory_plan(pipe, plan, "generate")
    params = {k: v for k, v in asdict(config).items()
              if k not in ("num_candidates", "seed", "batch_size", "reference_guidance_scales", "memory",
                           "quantization")}
    params.update(position_scheme=POSITION_SCHEME, dtype=str(dtype).removeprefix("torch."),
                  quantization=plan.quantization)
    done = 0
    for sc in work:
        with encoders_on(pipe, state.device) if plan.offload_encoders else nullcontext():
            text, refs_in = encode_scenario(pipe, settings, sc, config)
        seed_of = lambda i, key=sc.key: study_seed(study, key, i)  # noqa: E731
        for chunk, seeds, scale, images in sample_images(loaded, todo[arm.id, sc.id], text, refs_in, config, grid,
                                                         seed_of):
            for index, seed, image in zip(chunk, seeds, images):
                done += _store(settings, arm.id, sc.id, index, clean_png(image), seed,
                               {**params, "reference_guidance_scale": scale}, loaded.fingerprint)
                bar.update(1)
    return done, loaded.fingerprint


def _store(settings: Settings, arm_id: int, scenario_id: int, seed_index: int, png: bytes, seed: int, params: dict,
           fingerprint: str) -> bool:
    """Commit one image; False if another process stored this (arm, scenario, seed index) meanwhile."""
    try:
        with session_scope(settings.db_url) as session:
            asset = put_image(session, settings.store_dir, inspect_bytes(png, f"seed {seed_index}"))
            session.add(StudyImage(arm_id=arm_id, scenario_id=scenario_id, seed_index=seed_index, seed=seed,
                                   asset=asset, params=params, model_fingerprint=fingerprint))
    except IntegrityError:
        return False
    return True
