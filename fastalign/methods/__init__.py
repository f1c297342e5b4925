"""The alignment methods over Hugging Face causal LMs (docs/design.md#methods): :mod:`.aisp`,
:mod:`.sea`, :mod:`.bon` (each a ``Settings`` dataclass with ``check``, a ``run`` over encoded prompts
and a ``*_generate`` entry point), :mod:`._common` (what the three share) and :mod:`.results`
(``AlignResult``). Users import them as ``fastalign.aisp``, ``fastalign.sea``, ``fastalign.bon``,
``fastalign.results`` (``fastalign.PUBLIC_MODULES``); nothing here is imported until used."""
