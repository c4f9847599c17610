"""DARIS policy core (paper sections III-IV): pure Python, no ROS, no torch, no wall clock.

The contract with the simulator, the GPU runtime and the ROS node is docs/core_api.md; the mapping
from the paper's equations and rules to functions is docs/policy.md.
"""

from daris_ros.core.accounting import (
    Counters,
    PriorityStats,
    TaskStats,
    deadline_miss_rate,
    jobs_per_second,
    percentile,
)
from daris_ros.core.admission import (
    AdmissionResult,
    admission_test_eq12,
    admit_lp,
    hp_admission_test,
    migration_target,
    predicted_finish,
    remaining_utilization_eq11,
)
from daris_ros.core.assignment import min_util_context, populate_contexts_alg1
from daris_ros.core.batching import BatchingConfig, BatchStats
from daris_ros.core.deadlines import absolute_stage_deadlines, virtual_deadline_eq8
from daris_ros.core.feasibility import (
    ContextFeasibility,
    FeasibilityReport,
    InfeasibleTaskSet,
    TaskShare,
    check_feasibility,
    expected_rejection,
    feasibility_of,
)
from daris_ros.core.hyperparams import (
    Layout,
    Policy,
    SchedulerConfig,
    ceil_to_multiple,
    effective_layout,
    n_sm_max_for_limit,
    sm_per_context_eq9,
)
from daris_ros.core.job import Dispatch, Job, JobOutcome, ReleaseDecision
from daris_ros.core.mret import MretTracker, mret_stage_eq1, mret_task_eq2
from daris_ros.core.scheduler import AfetSource, Scheduler
from daris_ros.core.stage_queue import LEVEL_NAMES, N_LEVELS, StageQueue, stage_level
from daris_ros.core.task import Priority, TaskSpec
from daris_ros.core.utilization import (
    ContextUtilization,
    TaskLoad,
    UtilizationBook,
    active_lp_utilization,
    active_utilization_eq7,
    hp_utilization_eq4,
    lp_utilization_eq5,
    task_utilization_eq3,
    task_utilization_eq10,
    total_utilization_eq6,
)

__all__ = [
    "LEVEL_NAMES",
    "N_LEVELS",
    "AdmissionResult",
    "AfetSource",
    "BatchStats",
    "BatchingConfig",
    "ContextFeasibility",
    "ContextUtilization",
    "Counters",
    "Dispatch",
    "FeasibilityReport",
    "InfeasibleTaskSet",
    "Job",
    "JobOutcome",
    "Layout",
    "MretTracker",
    "Policy",
    "Priority",
    "PriorityStats",
    "ReleaseDecision",
    "Scheduler",
    "SchedulerConfig",
    "StageQueue",
    "TaskLoad",
    "TaskShare",
    "TaskSpec",
    "TaskStats",
    "UtilizationBook",
    "absolute_stage_deadlines",
    "active_lp_utilization",
    "active_utilization_eq7",
    "admission_test_eq12",
    "admit_lp",
    "ceil_to_multiple",
    "check_feasibility",
    "deadline_miss_rate",
    "effective_layout",
    "expected_rejection",
    "feasibility_of",
    "hp_admission_test",
    "hp_utilization_eq4",
    "jobs_per_second",
    "lp_utilization_eq5",
    "migration_target",
    "min_util_context",
    "mret_stage_eq1",
    "mret_task_eq2",
    "n_sm_max_for_limit",
    "percentile",
    "populate_contexts_alg1",
    "predicted_finish",
    "remaining_utilization_eq11",
    "sm_per_context_eq9",
    "stage_level",
    "task_utilization_eq3",
    "task_utilization_eq10",
    "total_utilization_eq6",
    "virtual_deadline_eq8",
]
