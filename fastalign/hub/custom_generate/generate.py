"""fastalign's AISP and Best-of-N as a Hugging Face custom generation method.

    model.generate(**inputs, custom_generate="<this repository>", trust_remote_code=True,
                   method="aisp", reward=reward, tokenizer=tokenizer, n=8, iterations=4, max_new_tokens=48)

Everything is implemented in the ``fastalign`` package (``fastalign.hf``); this file only forwards the
``generate`` call to it, so the Hub repository and the package cannot drift apart.
"""
import fastalign.hf


def generate(model, **kwargs):
    return fastalign.hf.generate(model, **kwargs)
