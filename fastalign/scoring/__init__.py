"""What scores a response and where the models come from (docs/design.md#layers): :mod:`.rewards`
(reward functions and models), :mod:`.metrics` (perplexity, coherence, distinct-n), :mod:`.models`
(the embedded SmolLM2 and MiniLM, and loading any model by name). Users import them as
``fastalign.rewards``, ``fastalign.metrics``, ``fastalign.models`` (``fastalign.PUBLIC_MODULES``)."""
