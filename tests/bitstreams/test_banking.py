"""The banking study (bitstreams/banking.py): its counts against brute-force enumeration of the
MVU's pair mapping (hdl/engine/mvu.py: round r, tile engine t takes pair r * T + t), and the present
mapping's timing equal to the cycle model's."""

import dataclasses
import itertools

import pytest

from accelml.bitstreams import banking
from accelml.compiler import compile_model, models
from accelml.hdl.config import preset
from accelml.sim.cycles import mvu_busy
from accelml.sim.funcsim import FuncSim


def _rounds(tiles, pixels, cob):
    """Each round's pairs as (engine, pixel, output block), enumerated as the RTL takes them."""
    pairs = pixels * cob
    for q0 in range(0, pairs, tiles):
        yield [(t, q // cob, q % cob) for t, q in enumerate(range(q0, min(q0 + tiles, pairs)))]


@pytest.mark.parametrize("tiles", [1, 3, 4, 12, 14])
def test_present_reads_are_the_most_any_round_reads(tiles):
    for pixels, cob in itertools.product([1, 2, 5, 9], [1, 2, 3, 4, 7, 8, 13, 16, 29]):
        want_obs = max(len({ob for _, _, ob in r}) for r in _rounds(tiles, pixels, cob))
        want_pix = max(len({p for _, p, _ in r}) for r in _rounds(tiles, pixels, cob))
        assert banking.present_reads(tiles, pixels, cob) == (want_obs, want_pix), (tiles, pixels, cob)


@pytest.mark.parametrize("tiles", [4, 6, 12, 14])
def test_a_chunk_of_a_multiple_or_divisor_of_t_keeps_every_engine_on_its_own_bank(tiles):
    """The chunked mapping's premise, on the RTL's mapping unchanged: with c a multiple of T, engine
    t only meets output blocks = t (mod T), one pixel a round; with c a divisor, only block t mod c,
    T / c pixels a round. Any other c puts two blocks of different banks on one engine."""
    for c in range(1, 3 * tiles + 1):
        seen = {}
        most_pix = 0
        for r in _rounds(tiles, 7, c):
            most_pix = max(most_pix, len({p for _, p, _ in r}))
            for t, _, ob in r:
                seen.setdefault(t, set()).add(ob % tiles if c % tiles == 0 else ob)
        own = all(obs == {t % tiles if c % tiles == 0 else t % c} for t, obs in seen.items())
        if c % tiles == 0 or tiles % c == 0:
            assert own, (tiles, c, seen)
            assert most_pix == (1 if c >= tiles else min(7, tiles // c))
        else:
            assert not own, (tiles, c)


def test_a_multiple_of_t_is_timed_as_the_cycle_model_times_it():
    for tiles, pixels, mult, kb in itertools.product([3, 12, 14], [1, 5, 49], [1, 2, 3], [1, 2, 9, 288]):
        c = mult * tiles
        for v in (1, 2):
            assert (banking.chunk_busy(tiles, pixels, c, kb, width=4, vrf_copies=v)
                    == mvu_busy(tiles, pixels * c, kb, width=4))
    with pytest.raises(ValueError, match="neither a multiple nor a divisor"):
        banking.chunk_busy(12, 4, 5, 9, width=4, vrf_copies=1)


def test_divisor_chunks_wait_for_the_vrf_copies():
    # T = 12, c = 4: three pixels a round; one VRF copy reads them in three cycles a step, three at once
    one = banking.chunk_busy(12, 300, 4, 9, width=4, vrf_copies=1)
    three = banking.chunk_busy(12, 300, 4, 9, width=4, vrf_copies=3)
    assert three == mvu_busy(12, 300 * 4, 9, width=4)  # 100 rounds of 12 pairs, as the present mapping
    assert one > 2.9 * three


@pytest.mark.parametrize("tiles", [4, 6, 12])
def test_the_chunked_cut_is_the_fastest_of_every_cut(tiles):
    """chunked_busy against an exhaustive search over cuts into divisor chunks (padded or not)."""
    divisors = [d for d in range(1, tiles + 1) if tiles % d == 0]
    kw = {"width": 2, "vrf_copies": 2}

    def cuts(r):  # every multiset of divisors covering r blocks, none of them superfluous
        if r <= 0:
            yield ()
            return
        for d in divisors:
            for rest in cuts(r - d):
                if not rest or d >= rest[0]:
                    yield (d, *rest)

    for pixels, cob, kb in itertools.product([1, 3, 20], range(1, 2 * tiles + 3), [1, 9]):
        whole = cob // tiles * tiles
        base = banking.chunk_busy(tiles, pixels, whole, kb, **kw) if whole else 0
        best = min(base + sum(banking.chunk_busy(tiles, pixels, d, kb, **kw) for d in cut)
                   for cut in cuts(cob - whole)) if cob > whole else base
        got, chunks = banking.chunked_busy(tiles, pixels, cob, kb, **kw)
        assert got == best, (tiles, pixels, cob, kb)
        assert sum(chunks) >= cob and all(c % tiles == 0 or tiles % c == 0 for c in chunks)


def test_the_present_mapping_measures_what_the_compiler_modelled():
    cfg = dataclasses.replace(preset("tiny"), tiles=3, name="tiny-t3")  # ResNet's even block counts cut 3 + 1
    cm = compile_model(models.build("resnet50", "reduced"), config=cfg, name="r50", precision="fast")
    got = banking.measure(cm)
    runs = [FuncSim(cfg, seg.compiled.mem_bytes, numerics=False).run(seg.compiled.program)
            for seg in cm.segments if seg.compiled is not None]
    assert got["cycles"] == sum(r.cycles for r in runs) and got["mvu_busy"] == sum(r.busy["mvu"] for r in runs)
    assert got["tiles_read"] == 3 and got["pixels_read"] >= 2 and 0 < got["multi_pixel_steps"] < 1
    one, three = (banking.measure(cm, mapping="chunked", vrf_copies=v) for v in (1, 3))
    assert one["mvu_busy"] > three["mvu_busy"] > got["mvu_busy"]  # a 1-block chunk reads 3 pixels a step
    with pytest.raises(ValueError, match="mapping"):
        banking.measure(cm, mapping="diagonal")


@pytest.mark.synth
def test_a_constant_division_takes_no_multiplier_and_a_reciprocal_product_does():
    """bitstreams/README.md, "Constant division": the banked MRF's `// T` and `% T` stay divisions,
    which cost logic only, where the large presets have no hard multiplier left."""
    from accelml.bitstreams.banking import divider_cells

    plain, product = divider_cells(12, 14), divider_cells(12, 14, reciprocal=True)
    assert plain.get("MULT18X18D", 0) == 0 and plain.get("LUT4", 0) > 0
    assert product.get("MULT18X18D", 0) > 0


@pytest.mark.parametrize(("dst", "rule", "turns"), [
    (9000, "built", False), (9000, "one", True), (9000, "one_fvrf", True), (9000, "one_vrf", False),
    (9000, "mfu_own", False), (9000, "halves", False), (2000, "halves", True), (9000, "halves_fvrf", False),
    (2000, "halves_fvrf", True), (2000, "halves_vrf", False)])
def test_write_port_rules_make_units_take_turns_on_a_shared_write_port(dst, rule, turns):
    """A vop writing the FVRF at ``dst`` and an mvc writing FVRF [0, 16) on a10 with a port set
    per unit and 16,384 FVRF vectors (halves at 8,192): on a port per unit, or with the MFU on a
    write port of its own, the two run at once; on one FVRF write port they take turns; on a write
    port per half only when both write the same half."""
    from accelml.hdl.program import assemble

    cfg = dataclasses.replace(preset("a10"), file_ports="unit", file_parts=1, fvrf_vectors=16384)
    text = ("cfg in_h, r0, 4\ncfg in_w, r0, 4\ncfg out_w, r0, 4\ncfg npix, r0, 16\ncfg in_cb, r0, 1\n"
            f"cfg cob, r0, 1\nseti r1, 1000\nseti r2, {dst}\nvop add, r2, r1, r1, 512, 0\nmvc r0, r0, r0, 0\nhalt")
    rules = {"built": (None, None), **banking.write_port_rules(cfg)}

    def cycles(name):
        sim = FuncSim(cfg, 1 << 20, numerics=False)
        shared, fn = rules[name]
        if shared is not None:
            sim.model.shared = shared
        if fn is not None:
            sim.model.port_conflict = fn
        return sim.run(assemble(text)).cycles

    assert (cycles(rule) > cycles("built")) == turns
