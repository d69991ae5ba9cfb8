"""Every test sees 8 fake CPU devices (must be set before JAX initialises its backend)."""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

jax.config.update("jax_num_cpu_devices", 8)

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden"
BENCHDATA = SHARED / "benchdata"


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO


@pytest.fixture(scope="session")
def fixture_golden_dir() -> pathlib.Path:
    """tests/golden: the reference's small golden files of all five architectures, in every clone."""
    return REPO / "tests" / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> pathlib.Path:
    if not GOLDEN.is_dir():
        pytest.skip(f"golden tensors not found at {GOLDEN}")
    return GOLDEN


@pytest.fixture(scope="session")
def benchdata_dir() -> pathlib.Path:
    if not BENCHDATA.is_dir():
        pytest.skip(f"benchmark release files not found at {BENCHDATA}")
    return BENCHDATA
