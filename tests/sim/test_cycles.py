"""The cycle model's shared memory bus and separate read/write DMA queues."""

from accelml.hdl.config import preset
from accelml.sim.cycles import CycleModel


def test_load_and_store_share_the_bus_bandwidth():
    m = CycleModel(preset("tiny"), 1 << 16)
    a = m.op("dma_load", 100, 0, writes=[("vrf", 0, 10)], bus=True)
    b = m.op("dma_store", 100, 0, reads=[("fvrf", 0, 10)], bus=True)
    assert abs(a - b) >= 100  # one bus: the two transfers do not overlap, whichever queue they are on


def test_a_later_load_backfills_the_bus_while_an_earlier_store_waits_for_data():
    m = CycleModel(preset("tiny"), 1 << 16)
    mvu_done = m.op("mvu", 500, 0, writes=[("vrf", 0, 10)])
    store = m.op("dma_store", 50, 0, reads=[("vrf", 0, 10, False)], bus=True)
    load = m.op("dma_load", 50, 0, writes=[("vrf", 100, 110)], bus=True)
    assert store >= mvu_done + 50  # the store waits for its data
    assert load < mvu_done  # the load, issued after it, ran on the idle bus meanwhile
