"""Tests of face grouping: k-means over face centres with k chosen per frame, and grouping by proposed group boxes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emoflow.vision import grouping

K = 48  # face slots per frame


def _layout(rng, num_groups, separation=14.0):
  """One frame of well-separated groups in K shuffled slots, the rest padded with junk.

  Each group has its own face size s (perspective), 1-6 faces of size
  s * U(0.9, 1.1) within 1.2 s of the group's centre, and centres at least
  `separation` times the larger face size apart.
  """
  sizes, centres = [], []
  while len(centres) < num_groups:
    s = rng.uniform(10, 50)
    c = rng.uniform(0, 4000, 2)
    if all(np.hypot(*(c - c2)) >= separation * max(s, s2) for c2, s2 in zip(centres, sizes)):
      sizes.append(s)
      centres.append(c)
  boxes, labels = [], []
  for g, (c, s) in enumerate(zip(centres, sizes)):
    for _ in range(rng.integers(1, 7)):
      r, angle = 1.2 * s * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
      centre = c + r * np.array([np.cos(angle), np.sin(angle)])
      half = s * rng.uniform(0.9, 1.1) / 2
      boxes.append([*(centre - half), *(centre + half)])
      labels.append(g)
  slots = rng.permutation(K)[:len(boxes)]
  out_boxes = rng.uniform(-1e4, 1e4, (K, 4)).astype(np.float32)  # junk where padded
  out_boxes[slots] = boxes
  out_labels = np.full(K, -1)
  out_labels[slots] = labels
  return out_boxes, out_labels >= 0, out_labels


def _same_partition(found, truth):
  """found and truth put the valid faces in the same groups, up to relabelling."""
  pairs = set(zip(found[truth >= 0].tolist(), truth[truth >= 0].tolist()))
  return len(pairs) == len({f for f, _ in pairs}) == len({t for _, t in pairs})


def test_recovers_well_separated_groups_exactly():
  rng = np.random.default_rng(0)
  frames = [_layout(rng, num_groups=1 + f % 8) for f in range(64)]
  boxes, valid, labels = (np.stack(x) for x in zip(*frames))
  groups = jax.tree.map(np.asarray, jax.vmap(grouping.group_faces)(boxes, valid))
  for f in range(len(frames)):
    assert int(groups.num_groups[f]) == labels[f].max() + 1
    assert _same_partition(groups.face_group[f], labels[f])
    np.testing.assert_array_equal(groups.face_group[f][~valid[f]], -1)
    np.testing.assert_array_equal(groups.valid[f], np.arange(10) < groups.num_groups[f])
    for g in range(int(groups.num_groups[f])):
      members = boxes[f][groups.face_group[f] == g]
      union = [*members[:, :2].min(0), *members[:, 2:].max(0)]
      np.testing.assert_allclose(groups.boxes[f, g], union, rtol=1e-6)
    assert not np.any(groups.boxes[f, int(groups.num_groups[f]):])


def test_splits_a_wide_group_into_compact_pieces():
  # One 7 x 7 block of faces, 2 face sizes apart: 8.5 face sizes from centre to corner.
  size = 20.0
  xy = np.stack(np.meshgrid(np.arange(7), np.arange(7)), -1).reshape(-1, 2) * 2 * size
  boxes = np.concatenate([xy - size / 2, xy + size / 2], 1)
  groups = grouping.group_faces(boxes, np.ones(len(boxes), bool), max_radius=3.0)
  assert 1 < int(groups.num_groups) < 10
  ids = np.asarray(groups.face_group)
  for g in range(int(groups.num_groups)):
    distance = np.hypot(*(xy[ids == g] - groups.centres[g]).T)
    assert distance.max() <= 3.0 * size + 1e-3
  # Allowed a radius of 9 face sizes, it is one group again.
  assert int(grouping.group_faces(boxes, np.ones(len(boxes), bool), max_radius=9.0).num_groups) == 1


def _numpy_farthest_points(points, k):
  chosen = [points[np.argmax(((points - points.mean(0)) ** 2).sum(1))]]
  while len(chosen) < k:
    nearest = ((points[:, None] - np.array(chosen)[None]) ** 2).sum(-1).min(1)
    chosen.append(points[np.argmax(nearest)])
  return np.array(chosen)


def _numpy_lloyd(points, centres, num_iters):
  def assign(centres):
    return ((points[:, None] - centres[None]) ** 2).sum(-1).argmin(1)

  centres = centres.copy()
  for _ in range(num_iters):
    assignment = assign(centres)
    for g in range(len(centres)):
      if np.any(assignment == g):
        centres[g] = points[assignment == g].mean(0)
  return centres, assign(centres)


@pytest.mark.parametrize("seed", range(3))
def test_lloyd_matches_numpy_from_the_same_start(seed):
  rng = np.random.default_rng(seed)
  points = rng.uniform(0, 500, (K, 2)).astype(np.float32)
  valid = rng.uniform(size=K) < 0.7
  k = 2 + seed * 3
  init = grouping.farthest_point_init(points, valid, 10)
  packed = points[valid].astype(np.float64)
  np.testing.assert_allclose(init[:k], _numpy_farthest_points(packed, k), rtol=1e-6)
  centres, assignment = grouping.lloyd(points, valid, init, jnp.arange(10) < k, num_iters=7)
  ref_centres, ref_assignment = _numpy_lloyd(packed, np.asarray(init[:k], np.float64), 7)
  np.testing.assert_allclose(centres[:k], ref_centres, rtol=1e-4)
  np.testing.assert_array_equal(centres[k:], init[k:])  # inactive centres stay put
  np.testing.assert_array_equal(assignment[valid], ref_assignment)
  np.testing.assert_array_equal(assignment[~valid], -1)


def test_padded_faces_do_not_move_anything():
  boxes, valid, _ = _layout(np.random.default_rng(3), num_groups=4, separation=3.0)
  order = np.argsort(~valid, kind="stable")  # the same faces, packed first, zeros after
  packed = np.where(valid[order][:, None], boxes[order], 0.0)
  a = grouping.group_faces(boxes, valid)
  b = grouping.group_faces(packed, valid[order])
  np.testing.assert_array_equal(np.asarray(a.face_group)[order], b.face_group)
  np.testing.assert_allclose(a.centres, b.centres, rtol=1e-6)
  np.testing.assert_allclose(a.boxes, b.boxes, rtol=1e-6)


def test_vmap_over_frames_matches_one_frame_at_a_time():
  rng = np.random.default_rng(4)
  frames = [_layout(rng, num_groups=n, separation=2.0) for n in (1, 3, 6)]
  boxes, valid, _ = (np.stack(x) for x in zip(*frames))
  batched = jax.jit(jax.vmap(grouping.group_faces))(boxes, valid)
  for f in range(3):
    single = grouping.group_faces(boxes[f], valid[f])
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(jax.tree.map(lambda x: x[f], batched))):
      np.testing.assert_allclose(a, b, rtol=1e-6)


def test_fixed_k_and_fewer_faces_than_groups():
  boxes, valid, labels = _layout(np.random.default_rng(5), num_groups=3)
  two = grouping.group_faces(boxes, valid, k=2)
  assert int(two.num_groups) == 2
  assert set(np.asarray(two.face_group)[valid].tolist()) == {0, 1}
  few = np.zeros((K, 4), np.float32)
  few[:3] = [[0, 0, 10, 10], [100, 0, 110, 10], [0, 100, 10, 110]]
  ten = grouping.group_faces(few, np.arange(K) < 3, k=10)
  assert int(ten.num_groups) == 3
  np.testing.assert_array_equal(sorted(np.asarray(ten.face_group)[:3]), [0, 1, 2])
  np.testing.assert_array_equal(ten.valid, np.arange(10) < 3)
  with pytest.raises(ValueError, match="k must lie"):
    grouping.group_faces(boxes, valid, k=11)


def test_a_frame_with_no_faces_has_no_groups():
  groups = grouping.group_faces(np.ones((K, 4), np.float32), np.zeros(K, bool))
  assert int(groups.num_groups) == 0 and not groups.valid.any()
  np.testing.assert_array_equal(groups.face_group, -1)
  assert not np.any(groups.boxes) and not np.any(groups.centres)


def _by_proposals(faces, proposals, **kwargs):
  faces, proposals = np.float32(faces), np.float32(proposals)
  boxes = np.zeros((8, 4), np.float32)
  boxes[:len(faces)] = faces
  return grouping.group_by_proposals(boxes, np.arange(8) < len(faces), proposals,
                                     np.ones(len(proposals), bool), k_max=3, **kwargs)


def test_faces_join_the_proposal_covering_most_of_them():
  faces = [[0, 0, 10, 10],       # inside proposal 1 only
           [40, 0, 50, 10],      # inside proposal 0 only
           [18, 0, 28, 10],      # 80% in proposal 1 (x < 26), 20% in proposal 0 (x >= 26)
           [22, 0, 30, 10],      # 50% in each: the earlier (better scored) proposal 0 wins
           [300, 300, 310, 310]]  # in none: k-means, after the proposal groups
  proposals = [[26, 0, 60, 20], [-5, -5, 26, 20], [500, 500, 600, 600]]  # the last one gets nobody
  groups = _by_proposals(faces, proposals)
  np.testing.assert_array_equal(np.asarray(groups.face_group)[:5], [1, 0, 1, 0, 2])
  np.testing.assert_array_equal(np.asarray(groups.face_group)[5:], -1)
  assert int(groups.num_groups) == 3 and groups.boxes.shape == (6, 4)
  np.testing.assert_array_equal(groups.valid, [True, True, True, False, False, False])
  # A group's box is the union of its faces' boxes, not the proposal.
  np.testing.assert_allclose(groups.boxes[:3], [[22, 0, 50, 10], [0, 0, 28, 10],
                                                [300, 300, 310, 310]])
  np.testing.assert_allclose(groups.centres[2], [305, 305])


def test_min_cover_decides_who_falls_back_to_kmeans():
  faces = [[0, 0, 10, 10], [8, 0, 18, 10]]  # the second is 20% inside the proposal
  proposals = [[-1, -1, 10, 11]]
  assert np.asarray(_by_proposals(faces, proposals).face_group)[:2].tolist() == [0, 1]
  loose = _by_proposals(faces, proposals, min_cover=0.2)
  assert np.asarray(loose.face_group)[:2].tolist() == [0, 0]


def test_without_proposals_it_is_kmeans():
  boxes, valid, _ = _layout(np.random.default_rng(7), num_groups=3)
  none = grouping.group_by_proposals(boxes, valid, np.zeros((4, 4), np.float32), np.zeros(4, bool))
  kmeans = grouping.group_faces(boxes, valid)
  np.testing.assert_array_equal(none.face_group, kmeans.face_group)
  np.testing.assert_allclose(none.boxes[:10], kmeans.boxes)
  assert none.boxes.shape == (14, 4)


def test_proposal_grouping_vmaps_over_frames():
  rng = np.random.default_rng(8)
  boxes = rng.uniform(0, 200, (3, 8, 2)).astype(np.float32)
  boxes = np.concatenate([boxes, boxes + 10], -1)
  valid = rng.random((3, 8)) < 0.8
  proposals = np.float32([[0, 0, 100, 100], [100, 0, 210, 210]])[None].repeat(3, 0)
  proposal_valid = np.array([[True, True], [True, False], [False, False]])
  batched = jax.jit(jax.vmap(grouping.group_by_proposals))(boxes, valid, proposals, proposal_valid)
  for f in range(3):
    single = grouping.group_by_proposals(boxes[f], valid[f], proposals[f], proposal_valid[f])
    np.testing.assert_array_equal(batched.face_group[f], single.face_group)
    np.testing.assert_allclose(batched.boxes[f], single.boxes)
