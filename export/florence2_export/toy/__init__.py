"""The toy world the tests, the demo and the benchmarks run on, offline and without downloads.

- :mod:`.tiny`: random-weight Florence-2 checkpoints (tiny, or base/large sized) with Florence-2's tokenizer layout;
- :mod:`.shapes`: a synthetic shapes-and-words dataset with the answer to every task;
- :mod:`.train_tiny`: trains a tiny Florence-2 on it (``python -m florence2_export.toy.train_tiny``) and
  evaluates it with transformers' ``generate``;
- :mod:`.tiny_eval`: scores any model on a held-out generated set and writes the trained model's card;
- :mod:`.demo`: the offline demo (``florence2 demo``): export the toy model, run every task, check the tokens.
"""
