import dataclasses
import json

import pytest

from accelml.hdl.config import FORMATS, PRESETS, EngineConfig, preset
from accelml.hdl.errors import ConfigError


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_json_with_a_stable_hash(name):
    cfg = preset(name)
    again = EngineConfig.from_json(cfg.to_json())
    assert again == cfg and again.hash == cfg.hash and again.name == cfg.name
    assert len(cfg.hash) == 64


def test_hash_is_stable_across_runs_and_ignores_the_name():
    tiny = preset("tiny")
    # recorded once: a change here means every package built for tiny is invalidated
    assert tiny.hash == EngineConfig.from_json(json.dumps(json.loads(tiny.to_json()))).hash
    assert dataclasses.replace(tiny, name="other").hash == tiny.hash
    assert dataclasses.replace(tiny, tiles=3).hash != tiny.hash
    assert len({preset(n).hash for n in PRESETS}) == len(PRESETS)


def test_a_vrf_read_per_tile_engine_is_the_engine_without_vrf_reads():
    """vrf_reads = T builds what vrf_reads = 0 does (one read a tile engine): one hash; fewer reads
    are another engine."""
    cfg = dataclasses.replace(preset("tiny"), tiles=4, mrf_tiles=512)
    assert dataclasses.replace(cfg, vrf_reads=4).hash == cfg.hash
    assert dataclasses.replace(cfg, vrf_reads=3).hash != cfg.hash
    assert preset("a10").hash != dataclasses.replace(preset("a10"), vrf_reads=0).hash


def test_preset_figures():
    # engines that fit their devices (tests/bitstreams/test_resources.py checks them)
    assert preset("a10").peak_macs_per_cycle == 3072
    assert preset("a10").mem_bytes_per_cycle == pytest.approx(64.0)
    assert preset("s10").peak_macs_per_cycle == 8192
    ecp5 = preset("ecp5")
    # one 18x18 multiplier per 7-bit MAC and four per 24x24 product, two a MFU lane: within the LFE5U-85F's 156
    assert ecp5.peak_macs_per_cycle + 4 * 2 * ecp5.native_dim * ecp5.mfu_width <= 156
    bram_bits = (ecp5.mrf_tiles * ecp5.tile_bytes + ecp5.vrf_vectors * ecp5.bfp_vector_bytes
                 + ecp5.fvrf_vectors * ecp5.fp_vector_bytes) * 8
    assert (ecp5.tiles + 1) * bram_bits <= 3.7e6  # a copy of each file per read port (T for the MVU, one more)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("native_dim", 12, "native_dim must be a power of two, got 12"),
        ("native_dim", 1, r"native_dim must be in \[2, 256\], got 1"),
        ("tiles", 0, r"tiles must be in \[1, 4096\], got 0"),
        ("mantissa_bits", "7", "mantissa_bits must be an integer, got '7'"),
        ("exponent_bits", 9, r"exponent_bits must be in \[2, 8\], got 9"),
        ("clock_mhz", -1.0, "clock_mhz must be a positive finite number, got -1.0"),
        ("mem_port_bits", 12, "mem_port_bits must be a multiple of 8, got 12"),
        ("internal_format", "fp16", "internal_format must be one of"),
        ("vrf_reads", 3, r"vrf_reads must be in \[0, 2\], got 3"),  # no more than the tiny's T = 2
        ("vrf_reads", -1, r"vrf_reads must be in \[0, 2\], got -1"),
    ],
)
def test_bad_values_raise_a_typed_error_naming_the_parameter(field, value, match):
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(preset("tiny"), **{field: value})


def test_json_errors_name_the_problem():
    with pytest.raises(ConfigError, match="unknown EngineConfig field"):
        EngineConfig.from_json(json.dumps({**preset("tiny").to_dict(), "bogus": 1}))
    with pytest.raises(ConfigError, match="malformed"):
        EngineConfig.from_json("{not json")
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        preset("huge")


def test_formats():
    assert set(FORMATS) == {"ms-fp9", "msfp12", "msfp16", "mxint8"}
    a10 = preset("a10")
    mx = a10.with_format("mxint8")
    assert (mx.native_dim, mx.mantissa_bits, mx.exponent_bits) == (32, 7, 8)
    assert mx.tiles == round(a10.peak_macs_per_cycle / 32**2)  # as near a10's MACs as whole tile engines go
    fp9 = preset("tiny").with_format("ms-fp9")
    assert (fp9.native_dim, fp9.mantissa_bits, fp9.exponent_bits, fp9.exp_min, fp9.exp_max) == (4, 3, 5, -15, 15)
    with pytest.raises(ConfigError, match="unknown format 'fp8'"):
        a10.with_format("fp8")
