"""``CausalLM``: scoring and generation with a Hugging Face causal LM, the engine under every method.

Tokenization mirrors lm-evaluation-harness's ``hf`` backend (``_encode_pair``, the
BOS-else-EOS prefix token, rolling windows) so numbers agree with it. Each job lives in its
own module and ``CausalLM`` joins them over one model and one cost counter:

- ``harness.tokenization``: prompts and (context, continuation) pairs to token ids;
- ``harness.batching``: batches under a token budget, padding, the chunked output head;
- ``harness.loglikelihood``: log p(continuation | context), shared contexts packed;
- ``harness.rolling``: rolling-window log-likelihood of long texts (perplexity);
- ``harness.decoding``: batched generation with stop strings, and the pieces a method needs
  to decode by itself (EOS ids, answer cutting, the incremental KV-cached decoder).
"""

from __future__ import annotations

from harness.decoding import Generation
from harness.loglikelihood import LoglikelihoodScoring
from harness.rolling import RollingScoring


class CausalLM(LoglikelihoodScoring, RollingScoring, Generation):
    """Batched scoring and generation over one loaded model, counting its cost."""
