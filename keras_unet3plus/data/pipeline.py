"""The streaming 2.5D tf.data pipeline.

Per epoch, every slice that contains the organ is used, plus a share of slices without it (the
classification-guided module needs negatives). ``negative_fraction`` is the share of negatives in
what the pipeline delivers: ``n_neg = round(f / (1 - f) * n_pos)`` over the whole case list,
spread over cases in proportion to their organ-free slices; which negatives are drawn changes
every epoch (seeded). ``negative_fraction=None`` delivers every slice (evaluation of full volumes).

Memory stays bounded by ``cycle_length`` cases however many there are: a small Python index (slice
counts and organ slices per case) is built first, then cases are opened by ``interleave`` a few at a
time, each streamed slice by slice by a generator that holds only the slices its samples use (read
through the reader registry, :mod:`.readers`: a NIfTI a slab at a time, other formats whole). The
interleave is sequential: TensorFlow's parallel interleave also opens ``2 x cycle_length`` future
cases ahead of time (measured: 6 generators alive for ``cycle_length=2``), which made peak memory
grow with the number of cases up to ``3 x cycle_length`` of them; the sequential one gives the same order with exactly
``cycle_length`` open. A streamed case keeps its planes at the model's size (windowed and resized once
each, as the cache stores them, instead of each 3-slice stack resized: a third of the work). With
``cache_dir``, cases are preprocessed once into memory-mapped ``.npy`` files (:mod:`.cache`) and
read from there.

Sharding: given a ``tf.distribute.InputContext`` (``strategy.distribute_datasets_from_function``),
input pipeline k gets cases k, k + n, k + 2n, ... (disjoint), the batch size is the per-replica
share of ``batch_size`` (global), and when training every pipeline stops after the same number of
steps so replicas never wait on each other.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from keras_unet3plus.data import preprocess as pp
from keras_unet3plus.data.augment import AugmentConfig, augment_sample
from keras_unet3plus.data.cache import CaseIndex, SliceCache, scan_case
from keras_unet3plus.data.checks import longest_first
from keras_unet3plus.data.layouts import Case
from keras_unet3plus.data.readers import SLAB, open_pair
from keras_unet3plus.data.volume import DataError, SlabSource, slab_source
from keras_unet3plus.data.tasks import TaskSpec, get_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset built by :func:`build_dataset` delivers per epoch (for this input pipeline)."""

    task: str
    n_cases: int
    n_positive: int
    n_negative: int
    requested_negative_fraction: float | None
    batch_size: int
    steps_per_epoch: int
    image_size: int
    channels: int
    cached: bool
    case_ids: tuple[str, ...] = field(repr=False, default=())

    @property
    def n_slices(self) -> int:
        return self.n_positive + self.n_negative

    @property
    def negative_share(self) -> float:
        """Share of delivered slices that do not contain the organ."""
        return self.n_negative / self.n_slices if self.n_slices else 0.0

    def summary(self) -> str:
        req = (
            "all slices"
            if self.requested_negative_fraction is None
            else f"requested {self.requested_negative_fraction:.1%}"
        )
        return (
            f"{self.task}: {self.n_cases} cases, {self.n_positive} organ slices + "
            f"{self.n_negative} without organ (negative share {self.negative_share:.1%}, {req}); "
            f"{self.steps_per_epoch} steps of batch {self.batch_size} at "
            f"{self.image_size}x{self.image_size}x{self.channels}"
            f"{', cached' if self.cached else ''}"
        )


def negatives_per_case(indices: Sequence[CaseIndex], negative_fraction: float | None) -> list[int]:
    """Number of organ-free slices drawn from each case per epoch (see module docstring)."""
    avail = [ix.n_slices - len(ix.positives) for ix in indices]
    if negative_fraction is None:
        return avail
    if not 0.0 <= negative_fraction < 1.0:
        raise ValueError(f"negative_fraction must be in [0, 1) or None, got {negative_fraction}")
    n_pos = sum(len(ix.positives) for ix in indices)
    total_avail = sum(avail)
    want = min(total_avail, int(round(negative_fraction / (1.0 - negative_fraction) * n_pos)))
    if want == 0 or total_avail == 0:
        return [0] * len(indices)
    # largest-remainder apportionment: exact total, proportional to what each case has
    quotas = np.array(avail, dtype=float) * want / total_avail
    counts = np.floor(quotas).astype(int)
    order = np.argsort(-(quotas - counts), kind="stable")
    for i in order[: want - counts.sum()]:
        counts[i] += 1
    return [int(min(c, a)) for c, a in zip(counts, avail)]


def select_slices(index: CaseIndex, n_negative: int, rng: np.random.Generator | None) -> np.ndarray:
    """All organ slices of a case plus ``n_negative`` organ-free ones (random if ``rng``)."""
    pos = np.asarray(index.positives, dtype=np.int64)
    neg_pool = np.setdiff1d(np.arange(index.n_slices, dtype=np.int64), pos)
    if n_negative >= neg_pool.size:
        neg = neg_pool
    elif rng is None:  # evenly spaced, deterministic
        neg = neg_pool[np.linspace(0, neg_pool.size - 1, n_negative).round().astype(np.int64)]
    else:
        neg = rng.choice(neg_pool, size=n_negative, replace=False)
    return np.sort(np.concatenate([pos, neg]))


def index_cases(
    cases: Sequence[Case],
    task: str | TaskSpec,
    cache: SliceCache | None = None,
    workers: int = 2,
    shard: tuple[int, int] = (0, 1),
) -> list[CaseIndex]:
    """Slice index of every case (reads labels only, or builds the cache entries once).

    ``shard``: (this worker, workers) of a multi-worker run; with a cache, each worker builds its
    share first and the entries are built once in all (:meth:`SliceCache.ensure`).
    """
    if cache is not None:
        rank, n = shard
        return [e.index for e in cache.ensure(cases, first=list(cases)[rank :: max(1, n)])]
    cases = list(cases)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {id(c): pool.submit(scan_case, c, task) for c in longest_first(cases)}
        return [futures[id(c)].result() for c in cases]


def _shard(cases: list[Case], input_context: tf.distribute.InputContext | None) -> list[Case]:
    if input_context is None or input_context.num_input_pipelines <= 1:
        return cases
    n, k = input_context.num_input_pipelines, input_context.input_pipeline_id
    if len(cases) < n:
        raise ValueError(f"{len(cases)} cases cannot be sharded over {n} input pipelines")
    return cases[k::n]


def build_dataset(
    cases: Sequence[Case],
    task: str | TaskSpec,
    cfg: pp.PreprocessConfig | None = None,
    batch_size: int = 8,
    training: bool = True,
    negative_fraction: float | None = 0.1,
    augment: bool | AugmentConfig = False,
    cache_dir: str | None = None,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    cycle_length: int = 4,
    shuffle_buffer: int = 64,
    epoch: int | None = None,
    index: Sequence[CaseIndex] | None = None,
    epochs: tuple[int, int] | None = None,
    batches_per_epoch: int | None = None,
    cache_dtype: str = "float16",
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """:func:`make_dataset` that also returns its :class:`DatasetInfo`.

    ``epoch`` (training): the dataset is that one epoch, its order a pure function of (``seed``,
    ``epoch``) — case order, negatives drawn, slice shuffle and augmentation — so a resumed run
    sees exactly the batches an uninterrupted one would (``.skip(n)`` starts it part-way, for a resume
    mid-epoch). Without ``epoch`` the dataset reshuffles on every pass (``repeat()`` it).
    ``epochs=(first, stop)`` (training): epochs first..stop-1 in one dataset, each exactly as
    ``epoch=e`` would give it, ``batches_per_epoch`` batches each (repeating the epoch's order when
    that is more than one pass). ``index``: the cases' slice index, when already computed (it reads
    every label otherwise). ``cache_dtype``: how the cache stores images (:mod:`.cache`: float16,
    or uint8 quantised to 1/255 of the HU window).
    """
    spec = get_task(task)
    cfg = (cfg or pp.PreprocessConfig()).for_task(spec)
    all_cases = _labelled(cases)
    cache = SliceCache(cache_dir, spec, cfg, cache_dtype) if cache_dir is not None else None
    all_index = list(index) if index is not None else index_cases(all_cases, spec, cache)
    if len(all_index) != len(all_cases):
        raise ValueError(f"make_dataset: {len(all_index)} index entries for {len(all_cases)} cases")
    global_batch = int(batch_size)
    per_replica = input_context.get_per_replica_batch_size(global_batch) if input_context else global_batch
    share = _share(all_cases, all_index, negative_fraction, input_context, per_replica, training)
    samples = _CaseSamples(share, spec, cfg, cache, seed, training)
    aug_cfg = AugmentConfig() if augment is True else (augment or None)
    passes = _Passes(
        samples.dataset,
        n_cases=len(share.cases),
        training=training,
        cycle=max(1, min(cycle_length, len(share.cases))),
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        augment=aug_cfg if training else None,
        binary=spec.binary,
        per_replica=per_replica,
        steps=share.steps,
    )
    ds = passes.schedule(epoch, epochs, batches_per_epoch)
    options = tf.data.Options()  # each input pipeline holds its shard of the cases already (_share)
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    info = share.info(spec, cfg, negative_fraction, per_replica, cached=cache is not None)
    log.info("make_dataset %s", info.summary())
    return ds.with_options(options), info


def _labelled(cases: Sequence[Case]) -> list[Case]:
    """The cases as a list, refused when empty or when one has no label file (a dataset trains or
    scores against labels)."""
    all_cases = list(cases)
    if not all_cases:
        raise ValueError("make_dataset: no cases given")
    for c in all_cases:
        if c.label_path is None:
            raise DataError(
                f"{c.image_path}: case '{c.case_id}' has no label file; training and evaluation datasets need labels"
            )
    return all_cases


@dataclass(frozen=True)
class _Share:
    """This input pipeline's cases (``ids``: their places in the whole list, which seed each case's
    draws) and what one epoch takes from them: organ slices, negatives per case, steps."""

    ids: list[int]
    cases: list[Case]
    index: list[CaseIndex]
    negatives: list[int]
    n_positive: int
    steps: int

    def info(
        self, spec: TaskSpec, cfg: pp.PreprocessConfig, negative_fraction: float | None, batch: int, cached: bool
    ) -> DatasetInfo:
        """What this share delivers per epoch, as :func:`build_dataset` reports it."""
        return DatasetInfo(
            task=spec.name,
            n_cases=len(self.cases),
            n_positive=self.n_positive,
            n_negative=sum(self.negatives),
            requested_negative_fraction=negative_fraction,
            batch_size=batch,
            steps_per_epoch=self.steps,
            image_size=cfg.image_size,
            channels=cfg.channels,
            cached=cached,
            case_ids=tuple(c.case_id for c in self.cases),
        )


def _share(
    all_cases: list[Case],
    all_index: list[CaseIndex],
    negative_fraction: float | None,
    input_context: tf.distribute.InputContext | None,
    per_replica: int,
    training: bool,
) -> _Share:
    """The cases of this input pipeline (k, k + n, ...) and its steps per epoch. When training,
    every pipeline takes the smallest shard's number of steps, so replicas stay in step."""
    n_pipelines = input_context.num_input_pipelines if input_context else 1
    neg_all = negatives_per_case(all_index, negative_fraction)
    shard_counts = [
        sum(len(all_index[i].positives) + neg_all[i] for i in range(k, len(all_cases), n_pipelines))
        for k in range(n_pipelines)
    ]
    my = list(range(len(all_cases)))
    if n_pipelines > 1:
        _shard(all_cases, input_context)  # validates the count
        my = my[input_context.input_pipeline_id :: n_pipelines]
    index = [all_index[i] for i in my]
    negatives = [neg_all[i] for i in my]
    n_pos = sum(len(ix.positives) for ix in index)
    if training:
        steps = min(c // per_replica for c in shard_counts)
        if steps == 0:
            raise ValueError(
                f"make_dataset: {min(shard_counts)} slices per input pipeline are fewer than one batch of {per_replica}"
            )
    else:
        steps = math.ceil((n_pos + sum(negatives)) / per_replica)
    return _Share(my, [all_cases[i] for i in my], index, negatives, n_pos, steps)


class _CaseSamples:
    """The generator ``interleave`` opens per case: ``(image stack, mask)`` for each slice one epoch
    draws from case ``case_idx`` (organ slices and that epoch's negatives, shuffled when training),
    from the cache, or streamed from the case's files holding only the slices its samples use."""

    def __init__(
        self,
        share: _Share,
        spec: TaskSpec,
        cfg: pp.PreprocessConfig,
        cache: SliceCache | None,
        seed: int,
        training: bool,
    ):
        self.share, self.spec, self.cfg, self.seed, self.training = share, spec, cfg, seed, training
        self.entries = [cache.get(c) for c in share.cases] if cache is not None else None
        self.window = cfg.window()

    def dataset(self, case_idx: tf.Tensor, epoch_seed: tf.Tensor) -> tf.data.Dataset:
        """Case ``case_idx``'s samples of one epoch as a dataset: what ``interleave`` opens per case."""
        s = self.cfg.image_size  # both sources deliver slices at the model's size
        sig = (tf.TensorSpec((s, s, self.cfg.channels), tf.float32), tf.TensorSpec((s, s, 1), tf.uint8))
        return tf.data.Dataset.from_generator(self, args=(case_idx, epoch_seed), output_signature=sig)

    def __call__(self, case_idx: int, epoch_seed: int):
        i, share, cfg = int(case_idx), self.share, self.cfg
        index = share.index[i]
        rng = np.random.default_rng([self.seed, int(epoch_seed) & 0x7FFFFFFFFFFFFFFF, share.ids[i]])
        zs = select_slices(index, share.negatives[i], rng if self.training else None)
        if self.training:
            zs = rng.permutation(zs)
        if self.entries is not None:
            entry = self.entries[i]
            images, masks = entry.load()
            for z in zs:
                idx = pp.context_indices(z, index.n_slices, cfg.context)[0]
                yield np.moveaxis(entry.images(images, idx), 0, -1), entry.masks(masks, z)[..., None]
            return
        image, label = open_pair(share.cases[i])
        # only the slices this epoch's samples use (and their neighbours), read a slab at a time and
        # kept at the model's size: each plane windowed and resized once (exact: resizing acts per
        # channel), the 2.5D stacks gathered from them, as the cache does
        stacks = pp.context_indices(zs, index.n_slices, cfg.context)
        planes = _gather(
            slab_source(image.image(stream=True)),
            np.unique(stacks),
            lambda p: pp.resize_images(pp.window_hu(p, self.window), cfg),
        )
        masks = _gather(
            slab_source(label.label(self.spec, stream=True)), np.unique(zs), lambda p: pp.resize_masks(p, cfg)
        )
        for z, stack in zip(zs, stacks):
            yield np.moveaxis(planes.take(stack), 0, -1), masks.take([z])[0][..., None]


@dataclass(frozen=True)
class _Passes:
    """How passes over the cases become batches, and how epochs are laid out in one dataset."""

    case_dataset: Callable[[tf.Tensor, tf.Tensor], tf.data.Dataset]
    n_cases: int
    training: bool
    cycle: int
    shuffle_buffer: int
    seed: int
    augment: AugmentConfig | None
    binary: bool
    per_replica: int
    steps: int

    def one_pass(self, base_seed, reshuffle: bool) -> tf.data.Dataset:
        """One pass over this pipeline's samples, its randomness drawn from ``base_seed`` (a Python
        int, or an int64 tensor inside a per-epoch ``flat_map``: then only stateless ops use it)."""
        symbolic = isinstance(base_seed, tf.Tensor)
        training = self.training
        order = tf.data.Dataset.range(self.n_cases)
        if training and symbolic:
            order = tf.data.Dataset.from_tensor_slices(
                tf.random.experimental.stateless_shuffle(
                    tf.range(self.n_cases, dtype=tf.int64), seed=tf.stack([base_seed, tf.constant(0, tf.int64)])
                )
            )
            epoch_seeds = tf.data.Dataset.from_tensors(base_seed).repeat()
        elif training:
            order = order.shuffle(self.n_cases, seed=base_seed, reshuffle_each_iteration=reshuffle)
            epoch_seeds = tf.data.Dataset.random(seed=base_seed, rerandomize_each_iteration=reshuffle)
        else:
            epoch_seeds = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat()
        # sequential: exactly `cycle` cases open (the parallel interleave opens 3x as many; module doc)
        ds = tf.data.Dataset.zip((order, epoch_seeds)).interleave(
            self.case_dataset, cycle_length=self.cycle, block_length=1
        )
        if training and self.shuffle_buffer > 1:
            # a tensor seed cannot reach shuffle (with a global seed set it is compared in Python):
            # the buffer's draw pattern is then fixed, its input order changes with every epoch
            ds = ds.shuffle(
                self.shuffle_buffer, seed=self.seed if symbolic else base_seed, reshuffle_each_iteration=reshuffle
            )
        if self.augment is not None:
            if symbolic:
                aug_seeds = tf.data.Dataset.range(2**62).map(
                    lambda i: tf.random.stateless_uniform(
                        [2], seed=tf.stack([base_seed, i]), minval=0, maxval=2**62, dtype=tf.int64
                    )
                )
            else:
                aug_seeds = tf.data.Dataset.random(seed=base_seed + 1, rerandomize_each_iteration=reshuffle).batch(2)
            aug_cfg = self.augment
            ds = tf.data.Dataset.zip((ds, aug_seeds)).map(
                lambda xy, sd: augment_sample(xy[0], xy[1], sd, aug_cfg),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        if self.binary:
            ds = ds.map(lambda x, y: (x, tf.cast(y > 0, tf.float32)), num_parallel_calls=tf.data.AUTOTUNE)
        else:
            ds = ds.map(lambda x, y: (x, tf.cast(y, tf.int32)), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(self.per_replica, drop_remainder=training)
        return ds.take(self.steps) if training else ds

    def schedule(
        self, epoch: int | None, epochs: tuple[int, int] | None, batches_per_epoch: int | None
    ) -> tf.data.Dataset:
        """The dataset :func:`build_dataset` describes for ``epoch`` / ``epochs``, prefetched."""
        if self.training and epochs is not None:
            # every epoch in one dataset (one iterator for the run: replacing an iterator whose
            # generators are mid-read deadlocks tf.data), each epoch a pure function of (seed, epoch)
            first, stop = (int(v) for v in epochs)
            per_epoch = int(batches_per_epoch or self.steps)

            def epoch_data(e):
                return self.one_pass(epoch_seed_of(self.seed, e), reshuffle=False).repeat().take(per_epoch)

            ds = tf.data.Dataset.range(first, stop).flat_map(epoch_data)
            ds = ds.apply(tf.data.experimental.assert_cardinality(per_epoch * max(0, stop - first)))
        elif self.training and epoch is not None:
            ds = self.one_pass(epoch_seed_of(self.seed, epoch), reshuffle=False)
            ds = ds.apply(tf.data.experimental.assert_cardinality(self.steps))
        else:
            ds = self.one_pass(self.seed, reshuffle=True)
            # the sample count is exact by construction; telling tf.data lets Keras show progress and
            # know the epoch length up front (from_generator alone has unknown cardinality)
            ds = ds.apply(tf.data.experimental.assert_cardinality(self.steps))
        return ds.prefetch(tf.data.AUTOTUNE)


class _Planes:
    """Some axial planes of a volume at the model's size, by slice number (what one case's samples use)."""

    def __init__(self, planes: np.ndarray, where: dict[int, int]):
        self.planes, self.where = planes, where

    def take(self, zs) -> np.ndarray:
        """(len(zs), S, S) planes for slice numbers ``zs``."""
        return self.planes[[self.where[int(z)] for z in zs]]


def _gather(source: SlabSource, wanted: np.ndarray, prepare) -> _Planes:
    """The planes ``wanted`` (sorted slice numbers) of ``source``, read a slab at a time, each slab's
    planes turned by ``prepare`` ((k, X, Y, 1) -> (k, S, S, 1)) into what the model takes; the
    rest of the file is not read once they are all in."""
    where = {int(z): k for k, z in enumerate(wanted)}
    planes, filled = None, 0
    slabs = source.slabs(SLAB)
    for z0, z1, slab in slabs:
        inside = wanted[(wanted >= z0) & (wanted < z1)]
        if inside.size == 0:
            continue
        ready = np.asarray(prepare(np.moveaxis(slab[:, :, inside - z0], 2, 0)[..., None]))[..., 0]
        if planes is None:
            planes = np.empty((len(wanted),) + ready.shape[1:], dtype=ready.dtype)
        planes[[where[int(z)] for z in inside]] = ready
        filled += inside.size
        if filled == len(wanted):
            slabs.close()  # the rest of the file is not needed: close it now
            break
    if planes is None:  # nothing wanted
        planes = np.empty((0, 0, 0), dtype=np.float32)
    return _Planes(planes, where)


def epoch_seed_of(seed, epoch):
    """The seed of one training epoch's data order: distinct per epoch, fixed per (seed, epoch);
    the same arithmetic on Python ints and on int64 tensors (inside a tf.data graph)."""
    return ((seed % 268435456) * 1000003 + epoch * 7919 + 12345) % 2147483647


def make_dataset(
    cases: Sequence[Case],
    task: str | TaskSpec,
    cfg: pp.PreprocessConfig | None = None,
    batch_size: int = 8,
    training: bool = True,
    negative_fraction: float | None = 0.1,
    augment: bool | AugmentConfig = False,
    cache_dir: str | None = None,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    cycle_length: int = 4,
    shuffle_buffer: int = 64,
    cache_dtype: str = "float16",
) -> tf.data.Dataset:
    """Batches of (image (B, S, S, 2c+1) float32 in [0, 1], mask (B, S, S, 1)).

    The mask is float32 {0, 1} for binary tasks and int32 class labels otherwise. ``batch_size``
    is global (divided over replicas when ``input_context`` is given). Training datasets shuffle
    cases and slices, redraw negatives and augmentation every epoch (seeded) and drop the last
    partial batch; evaluation datasets keep case order and fixed negatives. The per-epoch
    composition (negative share, steps) is logged; use :func:`build_dataset` to get it as a
    :class:`DatasetInfo`.
    """
    ds, _ = build_dataset(
        cases,
        task,
        cfg,
        batch_size,
        training,
        negative_fraction,
        augment,
        cache_dir,
        seed,
        input_context,
        cycle_length,
        shuffle_buffer,
        cache_dtype=cache_dtype,
    )
    return ds
