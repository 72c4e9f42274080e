"""undo_lib: the library behind the UNDO (Unlearn-Noise-Distill-on-Outputs) reproduction.

Modules: ``config`` (strict params), ``arithmetic`` and ``prepare`` (data), ``tokenizer``,
``model``, ``data`` (packing), ``losses``, ``methods`` (unlearning losses), ``train`` (the shared
loop), ``sam`` (sharpness-aware minimisation), ``checkpoint`` (resumable training), ``noise``
(UNDO), ``distill``, ``relearn``, ``evaluate``, ``compute``, ``resources`` (memory estimate),
``plots``, ``io``, ``runtime`` (stage start and finish).
"""
