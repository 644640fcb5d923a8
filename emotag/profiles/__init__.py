"""Per-user dynamic emotional profiles (SPEC §4).

Scored records (SPEC §2) and support conversations (SPEC §3) are folded into mergeable, time-decayed
per-user states; declarative TOML rules turn states into business tags (易怒, 失望流失风险, ...); states
persist in an embedded SQLite store under pseudonymous ids. See docs/profiles.md.
"""

from emotag.profiles.api import (
    FoldStats,
    ProfileColumnError,
    ProfileInputError,
    ProfilePlan,
    ProfileRunResult,
    build_profiles,
    check_fold,
    commit_profiles,
    fold_records,
    plan_profile,
    profile_rows,
    run_profile,
)
from emotag.profiles.conversations import conversation_to_record, is_conversation
from emotag.profiles.export import ExportError, write_rows
from emotag.profiles.privacy import (
    KEY_ENV,
    Pseudonymizer,
    PseudonymKeyError,
    cohort_counts,
    resolve_pseudonymizer,
)
from emotag.profiles.records import CHANNELS, EmotionLabels, LabelSetError, RecordError
from emotag.profiles.rules import (
    RulesError,
    RuleSet,
    apply_rules,
    default_rules_path,
    load_rules,
    parse_rules,
)
from emotag.profiles.state import METRIC_NAMES, ProfileState, merge_profiles, metric_names
from emotag.profiles.store import SCHEMA_VERSION, ProfileStore, StoreError, StoreVersionError, file_batch_id
from emotag.profiles.timeutil import TimeParseError, parse_time

#: Exceptions that mean "bad input or settings" (exit 1 with a one-line message), not a bug.
USER_ERRORS: tuple[type[Exception], ...] = (
    ProfileInputError,
    ProfileColumnError,
    RulesError,
    PseudonymKeyError,
    StoreError,
    ExportError,
    TimeParseError,
)

__all__ = [
    "USER_ERRORS",
    "CHANNELS",
    "KEY_ENV",
    "METRIC_NAMES",
    "SCHEMA_VERSION",
    "EmotionLabels",
    "ExportError",
    "FoldStats",
    "LabelSetError",
    "ProfileColumnError",
    "ProfileInputError",
    "ProfilePlan",
    "ProfileRunResult",
    "ProfileState",
    "ProfileStore",
    "PseudonymKeyError",
    "Pseudonymizer",
    "RecordError",
    "RuleSet",
    "RulesError",
    "StoreError",
    "StoreVersionError",
    "TimeParseError",
    "apply_rules",
    "build_profiles",
    "check_fold",
    "commit_profiles",
    "cohort_counts",
    "conversation_to_record",
    "default_rules_path",
    "file_batch_id",
    "fold_records",
    "is_conversation",
    "load_rules",
    "merge_profiles",
    "metric_names",
    "parse_rules",
    "parse_time",
    "plan_profile",
    "profile_rows",
    "resolve_pseudonymizer",
    "run_profile",
    "write_rows",
]
