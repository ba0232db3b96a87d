"""The science behind normguard, loaded only when used (it needs scipy; figures need matplotlib).

* :mod:`normguard.science.spectrum` — the data's eigendecay exponent α, with an interval.
* :mod:`normguard.science.theory` — the paper's trade-off between training and test error.
* :mod:`normguard.science.pilot` — norm-scaling pilots on small data.
* :mod:`normguard.science.datasets` — the paper's synthetic data and small labelled tasks.

``import normguard`` does not import this package; ``normguard.spectrum`` (and ``theory``,
``pilot``) are loaded on first attribute access.
"""
