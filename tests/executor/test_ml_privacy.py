"""DP-FedAvg math (services/executor/ml/privacy.py) and its accountant, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from services.executor.ml import privacy
from services.executor.ml.privacy import DpConfig
from services.executor.ml.privacy_accounting import PrivacyLedger, calibrate, epsilon, round_config

R = math.sqrt(2 * math.log(2))  # Box-Muller radius for u1 = 1/2


def _u1(value_times_2_53: int) -> bytes:
    """The 8 bytes whose Box-Muller u1 is value_times_2_53 / 2^53."""
    return ((value_times_2_53 - 1) << 11).to_bytes(8, "little")


HALF = _u1(2 ** 52)              # u1 = 1/2
ONE = _u1(2 ** 53)               # u1 = 1: radius 0, so no noise at all
ZERO_ANGLE = (0).to_bytes(8, "little")


def repeating(u1: bytes, u2: bytes):
    """A byte source whose every Box-Muller pair uses these u1 and u2."""
    def random_bytes(n: int) -> bytes:
        pairs = n // 16
        return u1 * pairs + u2 * pairs
    return random_bytes


def test_gaussian_is_box_muller_on_the_given_bytes():
    # u1 = 1/2, u2 = 0: (r cos 0, r sin 0) = (sqrt(2 ln 2), 0), times std 2.
    assert privacy.gaussian(2, 2.0, repeating(HALF, ZERO_ANGLE)) == pytest.approx([2 * R, 0.0], abs=1e-12)
    # u2 = 1/4: angle pi/2, so the pair is (0, r); an odd size drops the pair's second draw.
    quarter = (1 << 62).to_bytes(8, "little")  # (2^62 >> 11) / 2^53 = 1/4
    assert privacy.gaussian(2, 1.0, repeating(HALF, quarter)) == pytest.approx([0.0, R], abs=1e-12)
    assert privacy.gaussian(3, 1.0, repeating(HALF, ZERO_ANGLE)) == pytest.approx([R, R, 0.0], abs=1e-12)


def test_gaussian_from_the_os_csprng_is_standard_normal():
    z = privacy.gaussian(200_001, 3.0)
    assert z.shape == (200_001,)
    assert abs(z.mean()) < 5 * 3.0 / math.sqrt(z.size)
    assert z.std() == pytest.approx(3.0, rel=0.01)
    assert stats.kstest(z / 3.0, "norm").pvalue > 1e-4
    assert not np.array_equal(privacy.gaussian(8, 1.0), privacy.gaussian(8, 1.0))  # never replayed


def test_clip_l2_scales_long_vectors_onto_the_ball_and_keeps_short_ones():
    clipped, was = privacy.clip_l2(np.array([3.0, 4.0]), 1.0)
    assert clipped == pytest.approx([0.6, 0.8]) and was
    kept, was = privacy.clip_l2(np.array([0.3, 0.4]), 1.0)
    assert kept == pytest.approx([0.3, 0.4]) and not was


GLOBAL = {"w": np.zeros(2, np.float32)}
CLIENTS = [{"w": np.array([3.0, 4.0], np.float32)},   # norm 5: clipped to (0.6, 0.8)
           {"w": np.array([0.3, 0.0], np.float32)}]   # norm 0.3: kept


def test_central_average_clips_each_update_then_noises_the_sum():
    cfg = DpConfig("central", clip=1.0, noise_multiplier=1.0, delta=1e-5)
    quiet = privacy.central_average(GLOBAL, CLIENTS, cfg, repeating(ONE, ZERO_ANGLE))
    assert quiet["w"] == pytest.approx([(0.6 + 0.3) / 2, 0.8 / 2])
    # Sum noise N(0, (sigma*C)^2) = (R, 0) here, divided by the 2 clients with the sum.
    noisy = privacy.central_average(GLOBAL, CLIENTS, cfg, repeating(HALF, ZERO_ANGLE))
    assert noisy["w"] == pytest.approx([(0.9 + R) / 2, 0.4])
    wide = privacy.central_average(GLOBAL, CLIENTS, DpConfig("central", 10.0, 0.5, 1e-5), repeating(HALF, ZERO_ANGLE))
    assert wide["w"] == pytest.approx([(3.3 + 0.5 * 10 * R) / 2, 2.0])  # C = 10 clips nothing


def test_noised_average_adds_the_sum_noise_over_k_to_a_secure_average():
    cfg = DpConfig("central", clip=2.0, noise_multiplier=1.5, delta=1e-5)
    out = privacy.noised_average({"w": np.array([1.0, 1.0])}, GLOBAL, 3, cfg, repeating(HALF, ZERO_ANGLE))
    assert out["w"] == pytest.approx([1.0 + 1.5 * 2.0 * R / 3, 1.0])


def test_a_distributed_client_clips_and_adds_its_share_of_the_noise():
    cfg = DpConfig("distributed", clip=1.0, noise_multiplier=2.0, delta=1e-5)
    assert privacy.client_noise_std(cfg, 4) == pytest.approx(1.0)  # 2 * 1 / sqrt(4)
    base = {"w": np.array([1.0, 1.0])}
    local = {"w": np.array([4.0, 5.0])}  # delta (3, 4)
    out = privacy.privatize_update(local, base, cfg, 4, repeating(HALF, ZERO_ANGLE))
    assert out["w"] == pytest.approx([1.0 + 0.6 + R, 1.0 + 0.8])
    central = DpConfig("central", clip=1.0, noise_multiplier=2.0, delta=1e-5)
    assert privacy.privatize_update(local, base, central, 4)["w"] == pytest.approx([1.6, 1.8])  # clip only


def test_n_shares_sum_to_the_central_noise():
    cfg = DpConfig("distributed", clip=0.5, noise_multiplier=1.2, delta=1e-5)
    shares = np.stack([privacy.gaussian(50_000, privacy.client_noise_std(cfg, 5)) for _ in range(5)])
    assert shares.sum(axis=0).std() == pytest.approx(1.2 * 0.5, rel=0.02)


@pytest.mark.parametrize("mode,cohort,summed,honest,expected", [
    ("central", 10, 3, 1.0, 2.0),                      # the aggregator adds all the noise
    ("distributed", 10, 10, 1.0, 2.0),                 # every share summed
    ("distributed", 10, 8, 1.0, 2.0 * math.sqrt(0.8)),  # two dropouts took their shares with them
    ("distributed", 10, 10, 0.7, 2.0 * math.sqrt(0.7)),  # 3 may collude and subtract theirs
    ("distributed", 10, 10, 0.9, 2.0 * math.sqrt(0.9)),  # floor((1 - 0.9) * 10) is 1, not 0
    ("distributed", 10, 5, 0.7, 2.0 * math.sqrt(0.2)),  # both: 5 summed, 3 of them maybe dishonest
    ("distributed", 3, 3, 0.25, 2.0 * math.sqrt(1 / 3)),
    ("distributed", 4, 2, 0.5, 0.0),                   # no honest share left: no guarantee
])
def test_effective_noise_multiplier_counts_only_honest_summed_shares(mode, cohort, summed, honest, expected):
    cfg = DpConfig(mode, clip=1.0, noise_multiplier=2.0, delta=1e-5,
                   honest_fraction=honest if mode == "distributed" else 1.0)
    assert privacy.effective_noise_multiplier(cfg, cohort, summed) == pytest.approx(expected)


def test_multiplier_for_a_target_raises_sigma_by_the_dishonest_share():
    assert privacy.multiplier_for(1.0, "central", 10, 1.0) == 1.0
    assert privacy.multiplier_for(1.0, "distributed", 10, 0.7) == pytest.approx(math.sqrt(10 / 7))
    # h = 0.2 of 3 clients: floor(0.8 * 3) = 2 may collude, so one honest share must carry it all.
    assert privacy.multiplier_for(1.0, "distributed", 3, 0.2) == pytest.approx(math.sqrt(3))


def test_secagg_range_leaves_room_for_the_noise_share():
    dist = DpConfig("distributed", clip=1.0, noise_multiplier=1.0, delta=1e-5)
    assert privacy.secagg_range(4.0, dist, 4) == pytest.approx(1.0 + 8 * 0.5)
    assert privacy.secagg_range(4.0, DpConfig("central", 1.0, 1.0, 1e-5), 4) == 4.0
    assert privacy.secagg_range(0.5, DpConfig("central", 1.0, 1.0, 1e-5), 4) == 1.0
    assert privacy.secagg_range(4.0, None, 4) == 4.0


def test_config_from_params():
    assert privacy.config_from_params({"dp": "off"}, 3, calibrate) is None
    fixed = privacy.config_from_params({"dp": "central", "dp_clip": 0.5, "dp_noise_multiplier": 1.1,
                                        "dp_delta": 1e-6, "rounds": 5}, 3, calibrate)
    assert fixed == DpConfig("central", 0.5, 1.1, 1e-6)
    target = privacy.config_from_params({"dp": "distributed", "dp_target_epsilon": 4.0, "dp_delta": 1e-5,
                                         "dp_honest_fraction": 0.7, "rounds": 7}, 10, lambda e, d, r: 1.5)
    assert target.noise_multiplier == pytest.approx(1.5 * math.sqrt(10 / 7)) and target.distributed


@pytest.mark.parametrize("kwargs,field", [
    ({"mode": "local"}, "dp mode"), ({"clip": 0.0}, "dp_clip"), ({"noise_multiplier": 0.0}, "noise multiplier"),
    ({"delta": 1.0}, "dp_delta"), ({"honest_fraction": 0.0}, "dp_honest_fraction")])
def test_dp_config_refuses_meaningless_values(kwargs, field):
    base = {"mode": "central", "clip": 1.0, "noise_multiplier": 1.0, "delta": 1e-5}
    with pytest.raises(ValueError, match=field):
        DpConfig(**{**base, **kwargs})


# ------------------------------------------------------------------------------ accountant


def test_rdp_epsilon_of_ten_gaussian_rounds_by_hand():
    # Ten rounds at sigma = 1: RDP(alpha) = 10 * alpha / (2 sigma^2) = 5 alpha. Balle et al. 2020:
    # eps = RDP - (ln delta + ln alpha) / (alpha - 1) + ln((alpha - 1) / alpha), best at alpha = 2.5:
    # 12.5 + (11.512925 - 0.916291) / 1.5 + ln 0.6 = 12.5 + 7.064423 - 0.510826 = 19.053597.
    assert epsilon([1.0] * 10, 1e-5) == pytest.approx(19.053597, abs=1e-5)
    # The textbook bound T/(2 sigma^2) + sqrt(2 T ln(1/delta)) / sigma = 20.17 is looser.
    assert epsilon([1.0] * 10, 1e-5) < 5 + math.sqrt(20 * math.log(1e5))


def test_epsilon_composes_rounds_in_any_order():
    assert epsilon([], 1e-5) == 0.0
    assert epsilon([2.0, 2.0, 1.0], 1e-5) == pytest.approx(epsilon([2.0, 1.0, 2.0], 1e-5))
    assert epsilon([2.0, 2.0], 1e-5) < epsilon([2.0, 2.0, 1.0], 1e-5)
    assert epsilon([2.0, 0.0], 1e-5) == math.inf  # a round without honest noise
    ledger = PrivacyLedger().record(2.0).record(1.0)
    assert ledger.multipliers == (2.0, 1.0) and ledger.epsilon(1e-5) == epsilon([2.0, 1.0], 1e-5)


def test_calibrate_finds_the_multiplier_that_spends_the_target():
    sigma = calibrate(3.0, 1e-5, 20)
    assert 3.0 - 0.011 <= epsilon([sigma] * 20, 1e-5) <= 3.0
    assert calibrate(6.0, 1e-5, 20) < sigma < calibrate(3.0, 1e-5, 40)


def test_round_config_calibrates_a_target_for_the_whole_flow():
    cfg = round_config({"dp": "central", "dp_target_epsilon": 2.0, "dp_delta": 1e-5, "rounds": 10}, 3)
    assert epsilon([cfg.noise_multiplier] * 10, 1e-5) <= 2.0
    assert round_config({"dp": "off"}, 3) is None
