"""The ground floor: helpers every layer shares, importing no other package folder.

``bridge`` (TransformerLens bridge, model dimensions), ``arch`` (decoder layers, final
norm, residual outputs), ``hooks`` (one raw-hook context manager), ``heads`` (parse,
normalise and validate ``(layer, head)`` pairs), ``selection`` (top-K and the ablation
selections, heads files), ``mcq`` (records in the ``cais/wmdp`` schema), ``logprobs``
(tokenizing, batching and continuation log-probs), ``stats`` (intervals, paired
differences, bootstrap), ``records`` (list/seed parsing and crash-safe JSONL),
``checkpoint`` (the ``interp_unlearn.json`` metadata) and ``config`` (one
``to_dict``/``from_dict``/``--set`` story for every stage's config).
"""
