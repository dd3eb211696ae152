"""The CLI picks how OpenMP threads wait from the machine's load when it starts (apps.cli.openmp_wait_settings)."""

from __future__ import annotations

from apps.cli import openmp_wait_settings


def test_idle_cores_get_a_short_spin_and_busy_ones_passive_waiting() -> None:
    assert openmp_wait_settings({}, load1=0.1, cpus=2) == {"GOMP_SPINCOUNT": "5000"}
    assert openmp_wait_settings({}, load1=1.0, cpus=2) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert openmp_wait_settings({}, load1=1.0, cpus=8) == {"GOMP_SPINCOUNT": "5000"}  # 7 cores still idle
    assert openmp_wait_settings({}, load1=float("inf"), cpus=2) == {"OMP_WAIT_POLICY": "PASSIVE"}  # unknown load
    assert openmp_wait_settings({}, load1=0.0, cpus=0) == {"GOMP_SPINCOUNT": "5000"}


def test_what_the_user_set_is_left_alone() -> None:
    assert openmp_wait_settings({"OMP_WAIT_POLICY": "ACTIVE"}, load1=5.0, cpus=2) == {}
    assert openmp_wait_settings({"GOMP_SPINCOUNT": "0"}, load1=0.0, cpus=2) == {}
