"""The storyloop schema: every table the loop reads or writes.

The rules live on the tables (unique keys, foreign keys, checks), not in `if`s scattered
over the code: an idempotency key is a unique constraint, an append-only judgment history
is a (scenario, annotator, revision) key, a content-addressed asset is a unique sha256.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names, so Alembic migrations name the same thing on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True), dict: JSON, list: JSON}


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as VARCHAR + CHECK on both backends: portable, and migrations stay plain.
    return Enum(cls, name=name, native_enum=False, create_constraint=True, length=16,
                values_callable=lambda e: [m.value for m in e], validate_strings=True)


class Role(str, enum.Enum):
    annotator = "annotator"
    researcher = "researcher"
    admin = "admin"


class Outcome(str, enum.Enum):
    ranked = "ranked"      # winners ranked among the candidates that survived consistency and anatomy
    tie = "tie"            # survivors exist but are equally good
    all_bad = "all_bad"    # no candidate survived
    skipped = "skipped"    # the annotator could not judge; `skip_reason` says why


class SkipPolicy(str, enum.Enum):
    """Where a skipped scenario goes: the annotator could not judge it, someone else may."""

    others = "others"                # back to the queue for every other annotator; the skip does not count
    # back to the queue for all; the skipper sees it again only when nothing else is left
    everyone_last = "everyone_last"
    counts = "counts"                # a skip counts as one of the k judgments


class RunStatus(str, enum.Enum):
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # argon2id encoded hash (salt and parameters inside); the plain password is never stored.
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(_enum(Role, "role"), default=Role.annotator)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # For single sign-on: the provider's e-mail address maps to this account. Stored lower-case, so the
    # unique key is case-blind; NULL for password-only accounts.
    email: Mapped[str | None] = mapped_column(String(320), unique=True)


class LoginSession(Base):
    """A browser login: the cookie holds a random token, the table only its sha256."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()  # idle timeout, capped by an absolute lifetime
    revoked_at: Mapped[datetime | None] = mapped_column()  # set by logout

    user: Mapped[User] = relationship()


class LoginThrottle(Base):
    """Failed logins per key ("user:NAME" for any name typed, "client:ADDRESS"), and until when the key must
    wait: exponential back-off that lives in the database, so every server process and restart sees it."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column()

    __table_args__ = (CheckConstraint("failures >= 0", name="failures_non_negative"),)


class AuditEvent(Base):
    """Who did what, when, from where: logins, account changes, exports, gold and round settings, studies.
    Append-only: the database refuses to update or delete a row (triggers of revision 0006)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(128))  # the username, or "cli:<os user>" for a command
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(320))
    client: Mapped[str | None] = mapped_column(String(320))
    details: Mapped[dict | None] = mapped_column()


class Round(Base):
    """One turn of the loop: the scenarios judged together, and the model that generated them."""

    __tablename__ = "rounds"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"))
    # The model spec that generated (or will generate) this round's candidates.
    base_model: Mapped[str | None] = mapped_column(String(1024))
    stage1_lora_path: Mapped[str | None] = mapped_column(String(1024))
    stage1_lora_sha256: Mapped[str | None] = mapped_column(String(64))
    dpo_lora_path: Mapped[str | None] = mapped_column(String(1024))
    dpo_lora_sha256: Mapped[str | None] = mapped_column(String(64))
    judgments_per_scenario: Mapped[int] = mapped_column(Integer, default=3)
    gold_rate: Mapped[float] = mapped_column(Float, default=0.0)
    skip_policy: Mapped[SkipPolicy] = mapped_column(_enum(SkipPolicy, "skip_policy"), default=SkipPolicy.others,
                                                    server_default=SkipPolicy.others.value)
    # Where the scenarios came from when a bridge made them, e.g. {"benchmark": "vistorybench", "split": "lite",
    # "language": "en", ...} (storyloop/vistory); None for a round imported from a JSONL file.
    source: Mapped[dict | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    parent: Mapped[Round | None] = relationship(remote_side=[id])
    scenarios: Mapped[list[Scenario]] = relationship(back_populates="round", order_by="Scenario.id")

    __table_args__ = (
        CheckConstraint("judgments_per_scenario >= 1", name="k_positive"),
        CheckConstraint("gold_rate >= 0 AND gold_rate <= 1", name="gold_rate_unit"),
    )


class BenchmarkResult(Base):
    """A benchmark's verdict on a round's exported images: one evaluator summary (storyloop/vistory/results.py).

    `figures` holds the known metrics under storyloop's names, on the evaluator's own scale; `summary` keeps the
    file as it was, so nothing the evaluator wrote is lost."""

    __tablename__ = "benchmark_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    benchmark: Mapped[str] = mapped_column(String(32))  # "vistorybench"
    method: Mapped[str] = mapped_column(String(128))
    mode: Mapped[str] = mapped_column(String(128))
    language: Mapped[str] = mapped_column(String(16))
    split: Mapped[str] = mapped_column(String(16))  # full or lite: the stories the evaluator ran over
    evaluated_at: Mapped[str] = mapped_column(String(32))  # the evaluator's run timestamp, YYYYMMDD_HHMMSS
    figures: Mapped[dict] = mapped_column()
    summary: Mapped[dict] = mapped_column()
    summary_sha256: Mapped[str] = mapped_column(String(64))
    source_path: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    round: Mapped[Round] = relationship()

    # Named by hand: the convention's name would pass PostgreSQL's 63-character limit.
    __table_args__ = (UniqueConstraint("round_id", "benchmark", "method", "mode", "language", "evaluated_at",
                                       name="uq_benchmark_results_run"),)


class Asset(Base):
    """An image in the content-addressed store; its path is derived from `sha256`."""

    __tablename__ = "assets"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))  # PIL format name: PNG, JPEG, WEBP
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Scenario(Base):
    """A prompt plus ordered reference images: the unit an annotator judges."""

    __tablename__ = "scenarios"

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(256))  # the `id` of the import file, unique per round
    story_id: Mapped[str] = mapped_column(String(256))
    frame_index: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    round: Mapped[Round] = relationship(back_populates="scenarios")
    references: Mapped[list[ScenarioReference]] = relationship(
        order_by="ScenarioReference.position", cascade="all, delete-orphan")
    candidates: Mapped[list[Candidate]] = relationship(
        order_by="Candidate.index", back_populates="scenario", cascade="all, delete-orphan")

    __table_args__ = (
        UniqueConstraint("round_id", "key"),
        CheckConstraint("frame_index >= 0", name="frame_index_nonneg"),
    )


class ScenarioReference(Base):
    """One reference image of a scenario, in its GSA slot, and whose image it is (storyloop/characters.py)."""

    __tablename__ = "scenario_references"

    id: Mapped[int] = mapped_column(primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # order matters: it selects the position ids in GSA
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"))
    # The character this image shows; None: the one unnamed character of a flat reference list.
    character: Mapped[str | None] = mapped_column(String(128))

    asset: Mapped[Asset] = relationship()

    __table_args__ = (UniqueConstraint("scenario_id", "position"),)


class Candidate(Base):
    """One generated (or imported) image for a scenario, with everything that made it."""

    __tablename__ = "candidates"

    id: Mapped[int] = mapped_column(primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)  # k-th candidate of the scenario; generation resumes by it
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    params: Mapped[dict] = mapped_column(default=dict)  # steps, guidance, size, sampler ...
    model_fingerprint: Mapped[str | None] = mapped_column(String(128))  # hash of base + LoRAs
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    scenario: Mapped[Scenario] = relationship(back_populates="candidates")
    asset: Mapped[Asset] = relationship()

    __table_args__ = (UniqueConstraint("scenario_id", "index"),)


class Lease(Base):
    """Which annotator holds which scenario until when. One row per (scenario, annotator)."""

    __tablename__ = "leases"

    id: Mapped[int] = mapped_column(primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    leased_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    # The marks made so far (Draft.to_state), so a reload or a second tab resumes them; gone with the lease
    draft: Mapped[dict | None] = mapped_column()

    __table_args__ = (UniqueConstraint("scenario_id", "user_id"),)


class Judgment(Base):
    """One submitted judgment of a scenario by an annotator. Append-only: an edit is a new revision."""

    __tablename__ = "judgments"

    id: Mapped[int] = mapped_column(primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)  # 1 for the first submit, +1 for each edit
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    outcome: Mapped[Outcome] = mapped_column(_enum(Outcome, "outcome"))
    skip_reason: Mapped[str | None] = mapped_column(Text)
    shown_order: Mapped[list] = mapped_column()  # candidate ids, left to right, as the annotator saw them
    shown_at: Mapped[datetime] = mapped_column()
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Seconds spent judging: the gaps between the annotator's actions, each counted up to a limit, so a break
    # (a tab left open, or closed and reopened later) is not judging time. None: stored before it was measured.
    active_seconds: Mapped[float | None] = mapped_column(Float)

    labels: Mapped[list[JudgmentLabel]] = relationship(
        back_populates="judgment", cascade="all, delete-orphan", order_by="JudgmentLabel.candidate_id")

    __table_args__ = (
        UniqueConstraint("scenario_id", "user_id", "revision"),
        CheckConstraint("revision >= 1", name="revision_positive"),
        CheckConstraint("(outcome = 'skipped') = (skip_reason IS NOT NULL)", name="skip_has_reason"),
        CheckConstraint("active_seconds IS NULL OR active_seconds >= 0", name="active_seconds_nonneg"),
    )


class JudgmentLabel(Base):
    """The hierarchical labels one judgment gives one candidate."""

    __tablename__ = "judgment_labels"

    id: Mapped[int] = mapped_column(primary_key=True)
    judgment_id: Mapped[int] = mapped_column(ForeignKey("judgments.id", ondelete="CASCADE"))
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id", ondelete="CASCADE"))
    consistency_pass: Mapped[bool] = mapped_column(Boolean)
    # Asked only of candidates that passed consistency.
    anatomy_pass: Mapped[bool | None] = mapped_column(Boolean)
    # 1 = best, among candidates that passed both checks; NULL for the rest or when tied.
    aesthetics_rank: Mapped[int | None] = mapped_column(Integer)

    judgment: Mapped[Judgment] = relationship(back_populates="labels")

    __table_args__ = (
        UniqueConstraint("judgment_id", "candidate_id"),
        CheckConstraint("consistency_pass OR anatomy_pass IS NULL", name="anatomy_after_consistency"),
        CheckConstraint("aesthetics_rank IS NULL OR (anatomy_pass AND aesthetics_rank >= 1)",
                        name="rank_only_survivors"),
    )


class GoldAnswer(Base):
    """The expected judgment of a scenario, used to score annotators."""

    __tablename__ = "gold_answers"

    id: Mapped[int] = mapped_column(primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), unique=True)
    outcome: Mapped[Outcome] = mapped_column(_enum(Outcome, "gold_outcome"))
    winner_candidate_ids: Mapped[list] = mapped_column(default=list)
    loser_candidate_ids: Mapped[list] = mapped_column(default=list)
    notes: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DpoRun(Base):
    """A Diffusion-DPO training run: what it used, how it went, what it produced."""

    __tablename__ = "dpo_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"))
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus, "run_status"), default=RunStatus.pending)
    config: Mapped[dict] = mapped_column()
    pair_set_sha256: Mapped[str] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(128))
    artifact_path: Mapped[str | None] = mapped_column(String(1024))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()

    metrics: Mapped[list[DpoMetric]] = relationship(order_by="DpoMetric.step", cascade="all, delete-orphan")


class DpoMetric(Base):
    """Metrics logged at one optimizer step (trl's names: loss, rewards/chosen, ...)."""

    __tablename__ = "dpo_metrics"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("dpo_runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    values: Mapped[dict] = mapped_column()
    logged_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("run_id", "step"),)


# -- studies (issue #20): blind model-against-model comparisons ------------------------------------

class StudyKind(str, enum.Enum):
    pairwise = "pairwise"  # two arms' frames side by side: left / right / tie / both bad
    likert = "likert"      # one arm's story: character consistency, style consistency, aesthetics, 1-5


class ArmKind(str, enum.Enum):
    model = "model"    # storyloop generates with a base + LoRAs
    folder = "folder"  # images made elsewhere, matched to scenarios by file name


class StudyChoice(str, enum.Enum):
    left = "left"
    right = "right"
    tie = "tie"
    both_bad = "both_bad"


class GoldVerdict(str, enum.Enum):
    """A pairwise gold answer names an arm, not a side: sides are drawn per annotator."""

    arm = "arm"
    tie = "tie"
    both_bad = "both_bad"


class Study(Base):
    """Arms compared blind on the same scenarios and seeds."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[StudyKind] = mapped_column(_enum(StudyKind, "study_kind"))
    answers_per_item: Mapped[int] = mapped_column(Integer, default=3)  # k
    seeds: Mapped[int] = mapped_column(Integer, default=1)  # images per (arm, scenario)
    base_seed: Mapped[int] = mapped_column(BigInteger, default=0)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    gold_rate: Mapped[float] = mapped_column(Float, default=0.0)
    skip_policy: Mapped[SkipPolicy] = mapped_column(_enum(SkipPolicy, "study_skip_policy"),
                                                    default=SkipPolicy.others)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    round: Mapped[Round] = relationship()
    arms: Mapped[list[StudyArm]] = relationship(back_populates="study", order_by="StudyArm.id",
                                                cascade="all, delete-orphan")

    __table_args__ = (
        CheckConstraint("answers_per_item >= 1", name="k_positive"),
        CheckConstraint("seeds >= 1", name="seeds_positive"),
        CheckConstraint("gold_rate >= 0 AND gold_rate <= 1", name="gold_rate_unit"),
    )


class StudyArm(Base):
    """One system under comparison: a model spec storyloop generates with, or a folder of images."""

    __tablename__ = "study_arms"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[ArmKind] = mapped_column(_enum(ArmKind, "arm_kind"))
    # A model arm: the same columns a round records (db/rounds.py ModelSpec), plus its guidance scale.
    base_model: Mapped[str | None] = mapped_column(String(1024))
    stage1_lora_path: Mapped[str | None] = mapped_column(String(1024))
    stage1_lora_sha256: Mapped[str | None] = mapped_column(String(64))
    dpo_lora_path: Mapped[str | None] = mapped_column(String(1024))
    dpo_lora_sha256: Mapped[str | None] = mapped_column(String(64))
    reference_guidance_scale: Mapped[float | None] = mapped_column(Float)
    folder: Mapped[str | None] = mapped_column(String(1024))  # a folder arm: where its images came from

    study: Mapped[Study] = relationship(back_populates="arms")

    __table_args__ = (
        UniqueConstraint("study_id", "name"),
        CheckConstraint("(kind = 'folder') = (folder IS NOT NULL)", name="folder_iff_folder_arm"),
        CheckConstraint("kind = 'folder' OR (base_model IS NOT NULL AND reference_guidance_scale IS NOT NULL)",
                        name="model_arm_has_base"),
    )


class StudyImage(Base):
    """An arm's image for one scenario and seed index; the same seed index means the same seed in every
    model arm."""

    __tablename__ = "study_images"

    id: Mapped[int] = mapped_column(primary_key=True)
    arm_id: Mapped[int] = mapped_column(ForeignKey("study_arms.id", ondelete="CASCADE"))
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), index=True)
    seed_index: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(BigInteger)  # None for a folder arm
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"))
    params: Mapped[dict] = mapped_column(default=dict)
    model_fingerprint: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    asset: Mapped[Asset] = relationship()

    __table_args__ = (
        UniqueConstraint("arm_id", "scenario_id", "seed_index"),
        CheckConstraint("seed_index >= 0", name="seed_index_nonneg"),
    )


class StudyItem(Base):
    """What one answer is about. Pairwise: a scenario, a seed index and two arms. Likert: a story, a seed
    index and one arm. `position` is a shuffled order, so arms come in random order across items."""

    __tablename__ = "study_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(600))  # unique per study; names the item for logs and exports
    position: Mapped[int] = mapped_column(Integer)
    scenario_id: Mapped[int | None] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"))
    story_id: Mapped[str | None] = mapped_column(String(256))
    seed_index: Mapped[int] = mapped_column(Integer)
    arm_a_id: Mapped[int] = mapped_column(ForeignKey("study_arms.id", ondelete="CASCADE"))
    arm_b_id: Mapped[int | None] = mapped_column(ForeignKey("study_arms.id", ondelete="CASCADE"))

    study: Mapped[Study] = relationship()
    scenario: Mapped[Scenario | None] = relationship()
    arm_a: Mapped[StudyArm] = relationship(foreign_keys=[arm_a_id])
    arm_b: Mapped[StudyArm | None] = relationship(foreign_keys=[arm_b_id])

    __table_args__ = (
        UniqueConstraint("study_id", "key"),
        UniqueConstraint("study_id", "position"),
        CheckConstraint("(scenario_id IS NOT NULL AND arm_b_id IS NOT NULL AND arm_b_id <> arm_a_id "
                        "AND story_id IS NULL) OR (scenario_id IS NULL AND arm_b_id IS NULL "
                        "AND story_id IS NOT NULL)", name="pairwise_or_likert"),
        CheckConstraint("seed_index >= 0", name="seed_index_nonneg"),
    )


class StudyLease(Base):
    """Which annotator holds which study item until when. One row per (item, annotator)."""

    __tablename__ = "study_leases"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("study_items.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    leased_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()

    __table_args__ = (UniqueConstraint("item_id", "user_id"),)


class StudyAnswer(Base):
    """One submitted answer to a study item. Append-only: an edit or an undo is a new revision."""

    __tablename__ = "study_answers"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("study_items.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    # Pairwise: the arm shown on each side (drawn per annotator and revision).
    left_arm_id: Mapped[int | None] = mapped_column(ForeignKey("study_arms.id", ondelete="CASCADE"))
    right_arm_id: Mapped[int | None] = mapped_column(ForeignKey("study_arms.id", ondelete="CASCADE"))
    choice: Mapped[StudyChoice | None] = mapped_column(_enum(StudyChoice, "study_choice"))
    cc: Mapped[int | None] = mapped_column(Integer)  # character consistency, 1-5
    sc: Mapped[int | None] = mapped_column(Integer)  # style consistency, 1-5
    sa: Mapped[int | None] = mapped_column(Integer)  # aesthetics, 1-5
    skip_reason: Mapped[str | None] = mapped_column(Text)
    shown_at: Mapped[datetime] = mapped_column()
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("item_id", "user_id", "revision"),
        CheckConstraint("revision >= 1", name="revision_positive"),
        CheckConstraint("(left_arm_id IS NULL) = (right_arm_id IS NULL) AND "
                        "(left_arm_id IS NULL OR left_arm_id <> right_arm_id)", name="two_sides"),
        CheckConstraint("(cc IS NULL OR cc BETWEEN 1 AND 5) AND (sc IS NULL OR sc BETWEEN 1 AND 5) "
                        "AND (sa IS NULL OR sa BETWEEN 1 AND 5)", name="scores_1_to_5"),
        # Exactly one of: a skip (with its reason), a pairwise choice, or all three Likert scores.
        CheckConstraint("(skip_reason IS NOT NULL AND choice IS NULL AND cc IS NULL AND sc IS NULL AND sa IS NULL)"
                        " OR (skip_reason IS NULL AND choice IS NOT NULL AND cc IS NULL AND sc IS NULL "
                        "AND sa IS NULL) OR (skip_reason IS NULL AND choice IS NULL AND cc IS NOT NULL "
                        "AND sc IS NOT NULL AND sa IS NOT NULL)", name="one_kind_of_answer"),
    )


class StudyGoldAnswer(Base):
    """The expected answer to a study item: the better arm (or tie / both bad), or the three scores."""

    __tablename__ = "study_gold_answers"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("study_items.id", ondelete="CASCADE"), unique=True)
    verdict: Mapped[GoldVerdict | None] = mapped_column(_enum(GoldVerdict, "gold_verdict"))
    preferred_arm_id: Mapped[int | None] = mapped_column(ForeignKey("study_arms.id", ondelete="CASCADE"))
    cc: Mapped[int | None] = mapped_column(Integer)
    sc: Mapped[int | None] = mapped_column(Integer)
    sa: Mapped[int | None] = mapped_column(Integer)
    notes: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        CheckConstraint("(verdict IS NULL AND preferred_arm_id IS NULL) OR "
                        "(verdict = 'arm') = (preferred_arm_id IS NOT NULL)", name="arm_iff_arm_verdict"),
        CheckConstraint("(verdict IS NULL) = (cc IS NOT NULL AND sc IS NOT NULL AND sa IS NOT NULL)",
                        name="verdict_or_scores"),
        CheckConstraint("(cc IS NULL OR cc BETWEEN 1 AND 5) AND (sc IS NULL OR sc BETWEEN 1 AND 5) "
                        "AND (sa IS NULL OR sa BETWEEN 1 AND 5)", name="scores_1_to_5"),
    )
