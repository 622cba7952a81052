"""Conditioning: what a model is conditioned on (classes or words), and every place a condition is made.

    spec.py      what a model is conditioned on, as its exported model records it; ConditionError
    rows.py      condition rows for a loaded generator: a class, a blend of classes, a prompt, random draws
    encoder.py   the offline sentence encoder (the one module that imports sentence-transformers)
    prompts.py   a prompt checked and read as a mixture of the training captions
    captions.py  which captions name the same thing (matching-aware negatives)
    training.py  the dataset's condition table and a training step's condition draws

The networks see only condition vectors [B, cond_size], never names or text.
"""
