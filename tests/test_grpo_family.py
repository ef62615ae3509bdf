"""The GRPO family's pieces (lmresearch/stages/grpo_family.py) and the answer statistics
(stages/answer_stats.py), each on an example computed by hand from its paper's formula."""
import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest

from lmresearch.stages import answer_stats, grpo_family as gf


def test_advantages_grpo_dr_grpo_and_rloo_by_hand():
  r = jnp.array([1., 0., 0., 0., 1., 1., 0., 0.])
  std = math.sqrt(0.25 * 0.75)   # the group's population std (DeepSeekMath normalizes by it)
  np.testing.assert_allclose(gf.advantages(r, 4, 'grpo')[:4],
                             [0.75 / (std + 1e-4)] + [-0.25 / (std + 1e-4)] * 3, rtol=1e-5)
  np.testing.assert_allclose(gf.advantages(r, 4, 'dr_grpo'), [.75, -.25, -.25, -.25, .5, .5, -.5, -.5])
  # RLOO: r_i minus the mean of the other three.
  np.testing.assert_allclose(gf.advantages(r, 4, 'rloo'),
                             [1, -1 / 3, -1 / 3, -1 / 3, 1 - 1 / 3, 1 - 1 / 3, -2 / 3, -2 / 3], rtol=1e-6)
  with pytest.raises(ValueError, match='advantage'):
    gf.advantages(r, 4, 'ppo')


def test_loss_aggregations_by_hand():
  x = jnp.array([[1., 2., 3.], [4., 9., 9.]])
  mask = jnp.array([[1, 1, 1], [1, 0, 0]])
  assert float(gf.aggregate(x, mask, 'sequence')) == pytest.approx((6 / 3 + 4 / 1) / 2)   # GRPO
  assert float(gf.aggregate(x, mask, 'token')) == pytest.approx(10 / 4)                  # DAPO
  assert float(gf.aggregate(x, mask, 'constant', max_len=3)) == pytest.approx(10 / 6)    # Dr. GRPO
  assert float(gf.aggregate(x, mask, 'sum')) == pytest.approx((6 + 4) / 2)               # RLOO
  with pytest.raises(ValueError, match='max_len'):
    gf.aggregate(x, mask, 'constant')


def test_gspo_sequence_ratio_is_the_length_normalized_likelihood_ratio():
  old = jnp.zeros((2, 3))
  logp = jnp.array([[0.1, 0.2, 0.3], [0.5, 7.0, 7.0]])
  mask = jnp.array([[1, 1, 1], [1, 0, 0]])
  s = gf.ratios(logp, old, mask, 'sequence')
  np.testing.assert_allclose(s, [[math.exp(0.2)] * 3, [math.exp(0.5)] * 3], rtol=1e-6)
  np.testing.assert_allclose(gf.ratios(logp, old, mask, 'token'), np.exp(logp), rtol=1e-6)


def test_clip_higher_bounds_each_side_only_where_it_binds():
  ratio = jnp.array([1.5, 0.5, 1.5, 1.1])
  adv = jnp.array([1., -1., -1., 1.])
  loss, low, high = gf.clipped_objective(ratio, adv, clip_low=0.2, clip_high=0.28)
  np.testing.assert_allclose(loss, [-1.28, 0.8, 1.5, -1.1], rtol=1e-6)
  assert low.tolist() == [False, True, False, False]
  assert high.tolist() == [True, False, False, False]


def test_kl_estimators_and_truncated_importance_weights():
  assert float(gf.kl_estimate(jnp.array(-1.), jnp.array(-2.), 'k1')) == pytest.approx(1.0)
  assert float(gf.kl_estimate(jnp.array(-1.), jnp.array(-2.), 'k3')) == pytest.approx(math.exp(-1))
  w = gf.tis_weights(jnp.array([-1., -1.]), jnp.array([-1.5, -3.]), cap=2.0)
  np.testing.assert_allclose(w, [math.exp(0.5), 2.0], rtol=1e-6)


def test_soft_overlong_punishment_and_all_equal_groups():
  pen = gf.overlong_penalty(jnp.array([5, 6, 8, 10]), jnp.array([True, True, True, False]),
                            max_len=10, cache=4)
  np.testing.assert_allclose(pen, [0, 0, -0.5, -1])
  eq = gf.all_equal_groups(jnp.array([1., 1., 0., 1., 0., 0.]), 2)
  assert eq.tolist() == [True, False, True]


def test_logprob_gap_over_reply_tokens():
  gap = gf.logprob_gap(jnp.array([[0., -1., -2.]]), jnp.array([[5., -1.05, -2.5]]),
                       jnp.array([[0, 1, 1]]), threshold=0.1)
  assert float(gap['mean']) == pytest.approx(0.275)
  assert float(gap['max']) == pytest.approx(0.5)
  assert float(gap['share_above']) == pytest.approx(0.5)


def test_recipes_name_only_known_options():
  for name, recipe in gf.RECIPES.items():
    assert recipe['advantage'] in gf.ADVANTAGES and recipe['aggregation'] in gf.AGGREGATIONS
    assert recipe['ratio'] in gf.RATIOS and recipe['overlong'] in gf.OVERLONG
    assert recipe['kl'] in gf.KL_ESTIMATORS, name


@pytest.mark.parametrize('n,c,k', [(4, 1, 2), (5, 2, 2), (6, 3, 4), (7, 0, 3), (5, 5, 1), (8, 2, 7)])
def test_pass_at_k_equals_the_share_of_k_subsets_holding_a_right_sample(n, c, k):
  """Chen et al.'s estimator is exactly the mean over all k-subsets of the n samples."""
  samples = [True] * c + [False] * (n - c)
  subsets = list(itertools.combinations(samples, k))
  assert answer_stats.pass_at_k(n, c, k) == pytest.approx(sum(map(any, subsets)) / len(subsets))


def test_pass_at_k_by_hand_and_the_curve():
  assert answer_stats.pass_at_k(4, 1, 2) == pytest.approx(0.5)    # 1 - C(3,2)/C(4,2)
  assert answer_stats.pass_at_k(5, 2, 2) == pytest.approx(0.7)    # 1 - C(3,2)/C(5,2)
  assert answer_stats.ks(8) == [1, 2, 4, 8] and answer_stats.ks(6) == [1, 2, 4, 6]
  right = np.array([[True, False, False, False], [False, False, False, False]])
  answers = [['3', '4', '4', None], ['1', '2', None, None]]
  out = answer_stats.curve(right, answers, lengths=np.array([[10, 20, 30, 40], [1, 2, 3, 4]]))
  assert out['pass@1'] == pytest.approx((0.25 + 0) / 2)
  assert out['pass@4'] == pytest.approx(0.5)
  assert out['maj@1'] == 0.5 and out['maj@4'] == 0.0   # '4' outvotes the right '3'
  assert out['maj@2'] == 0.5                            # a tie: the answer seen first, '3'
  assert out['len_right'] == 10 and out['len_wrong'] == pytest.approx((20 + 30 + 40 + 10) / 7)
  with pytest.raises(ValueError):
    answer_stats.pass_at_k(3, 4, 1)


def test_dynamic_sampling_keeps_groups_with_a_signal_and_fills_with_dropped_ones():
  first = np.array([1., 1., 0., 1., 0., 0.])    # groups of 2: all-equal, signal, all-equal
  second = np.array([0., 1., 1., 1., 1., 0.])   # signal, all-equal, signal
  rows, keep = gf.select_groups([first, second], 2, 3)
  assert rows.tolist() == [2, 3, 6, 7, 10, 11] and keep.tolist() == [1] * 6
  rows, keep = gf.select_groups([first], 2, 3)   # one group with a signal: two fillers
  assert rows.tolist() == [2, 3, 0, 1, 4, 5] and keep.tolist() == [1, 1, 0, 0, 0, 0]
