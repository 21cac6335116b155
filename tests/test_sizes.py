import pytest

from pipeline.sizes import ConstantSize, LinearRamp, Step


def test_constant_plan_covers_every_sample_once_in_eval():
    plan = ConstantSize(64, 10).plan(epoch=0, num_samples=25, drop_last=False)
    assert [s.batch_size for s in plan] == [10, 10, 5]
    assert {s.res for s in plan} == {64}


def test_constant_plan_drops_partial_batch_in_training():
    assert ConstantSize(64, 10).plan(0, 25, drop_last=True) == [Step(64, 10), Step(64, 10)]


def test_ramp_goes_from_start_to_end_in_multiples_of_step():
    ramp = LinearRamp(start_res=128, end_res=192, start_epoch=2, end_epoch=6, batch_size=8, step=32)
    sides = [ramp.res_at(e) for e in range(9)]
    assert sides[:3] == [128, 128, 128]
    assert sides[6:] == [192, 192, 192]
    assert all(s % 32 == 0 for s in sides)
    assert sides == sorted(sides)
    assert ramp.plan(4, 16, drop_last=True) == [Step(160, 8), Step(160, 8)]


def test_ramp_with_custom_step():
    ramp = LinearRamp(64, 96, 0, 4, 4, step=8)
    assert [ramp.res_at(e) for e in range(5)] == [64, 72, 80, 88, 96]


@pytest.mark.parametrize("res,bs", [(0, 8), (-32, 8), (64, 0), (64, -1), (64.5, 8)])
def test_bad_values_name_the_value(res, bs):
    with pytest.raises(ValueError, match=str(res) if not isinstance(res, int) or res <= 0 else str(bs)):
        ConstantSize(res, bs)


def test_bad_ramp_epochs():
    with pytest.raises(ValueError, match="ramp epochs"):
        LinearRamp(64, 128, 5, 2, 8)
