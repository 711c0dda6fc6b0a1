"""The label version: made by relabel, read by training, extended by the EMA round, shown by
the CLI and the flows. The only package of ``mlb`` that imports ``storage``.

- :mod:`mlb.labels.request`: what a relabel job is and the records it returns;
- :mod:`mlb.labels.metadata`: the typed metadata every version carries;
- :mod:`mlb.labels.relabel`: prepare / label shards / publish;
- :mod:`mlb.labels.pipeline`: the decode -> teacher -> writer threads;
- :mod:`mlb.labels.teacher`: the teacher's hash and per-process cache;
- :mod:`mlb.labels.dataset`: a version as a training dataset;
- :mod:`mlb.labels.score`: labels and masks scored against true alpha;
- :mod:`mlb.labels.preview`: a contact sheet of a version;
- :mod:`mlb.labels.store`: the store and its errors as the rest of ``mlb`` and the flows see
  them.

Submodules are imported where used (torch is heavy; ``mlb labels list`` needs none of it).
"""
