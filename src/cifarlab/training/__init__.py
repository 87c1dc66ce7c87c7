"""Training: optimizers, schedules and precision (:mod:`~cifarlab.training.recipe`), the
callbacks of a fit (:mod:`~cifarlab.training.callbacks`), one model's training with its
resume (:mod:`~cifarlab.training.train`), VGG16's two phases
(:mod:`~cifarlab.training.transfer`), the search and its winner rule
(:mod:`~cifarlab.training.tune`, :mod:`~cifarlab.training.winner`), what is saved with each
model (:mod:`~cifarlab.training.evidence`) and several devices or workers
(:mod:`~cifarlab.training.distribute`).
"""
