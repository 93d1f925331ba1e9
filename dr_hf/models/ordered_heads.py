"""Graders whose head knows the grades are ordered: ordinal (CORN) and regression.

`OrderedTimmForImageClassification` is transformers' `TimmWrapperForImageClassification` with
another head, chosen by the config attribute `dr_hf_head`:

- "ordinal": CORN (Shi et al. 2021). The timm classifier is a Linear with K-1 = 4 outputs,
  z_k = logit P(y > k | y > k-1). The class log-probabilities are
  log P(y=k) = sum_{j<k} logsigmoid(z_j) + logsigmoid(-z_k) for k < 4 and
  log P(y=4) = sum_{j<4} logsigmoid(z_j); they are rank-consistent by construction
  (P(y > k) falls with k). `forward` returns them as `logits`, so a softmax (transformers'
  image-classification pipeline, dr_hf's grading) gives the five class probabilities back
  exactly, and cross-entropy on them is the CORN loss of each image.
- "regression": the classifier is a Linear with 1 output, the continuous grade; the config says
  `problem_type="regression"`, so the pipeline returns the raw score.

This file imports only torch and transformers: saved models carry a copy of it (`auto_map` in
config.json), so `AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)`
and `pipeline("image-classification", model=folder, trust_remote_code=True)` load them where dr_hf
is not installed. Without `trust_remote_code`, transformers builds the plain wrapper with five
outputs, and the four-output ordinal classifier in the weights is refused as a size mismatch.
"""

import timm
import torch
import torch.nn.functional as F
from transformers import TimmWrapperConfig, TimmWrapperForImageClassification
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.models.timm_wrapper.modeling_timm_wrapper import TimmWrapperPreTrainedModel

HEAD_KEY = "dr_hf_head"  # the config attribute; dr_hf.grading_rule names it too
ORDERED_HEADS = ("ordinal", "regression")


def head_of_config(config) -> str:
    """The config's head; "softmax" when it names none (every model saved before heads existed)."""
    return getattr(config, HEAD_KEY, None) or "softmax"


def head_outputs(config) -> int:
    """Outputs of the timm classifier: K-1 cumulative logits (ordinal), 1 score (regression),
    otherwise one logit per label."""
    head = head_of_config(config)
    if head == "ordinal":
        return config.num_labels - 1
    if head == "regression":
        return 1
    return config.num_labels


def corn_log_probs(z: torch.Tensor) -> torch.Tensor:
    """Class log-probabilities [N, K] from the CORN conditional logits z [N, K-1]."""
    stay_above = F.logsigmoid(z)
    stop_here = F.logsigmoid(-z)
    before = F.pad(torch.cumsum(stay_above, dim=-1), (1, 0))  # sum_{j<k} logsigmoid(z_j)
    return before + F.pad(stop_here, (0, 1))


def corn_logits(log_probs: torch.Tensor) -> torch.Tensor:
    """The CORN conditional logits z [N, K-1] behind class log-probabilities [N, K] (the inverse
    of `corn_log_probs`): z_k = log P(y > k) - log P(y = k)."""
    above_or_at = torch.logcumsumexp(log_probs.flip(-1), dim=-1).flip(-1)  # log P(y >= k)
    return above_or_at[..., 1:] - log_probs[..., :-1]


class OrderedTimmForImageClassification(TimmWrapperForImageClassification):
    """A timm model with an ordinal (CORN) or regression head, in transformers' TimmWrapper."""

    def __init__(self, config: TimmWrapperConfig):
        head = head_of_config(config)
        if head not in ORDERED_HEADS:
            raise ValueError(
                f"{HEAD_KEY}={head!r}: this class holds the {' and '.join(ORDERED_HEADS)} heads; a "
                "softmax grader is a plain TimmWrapperForImageClassification."
            )
        TimmWrapperPreTrainedModel.__init__(self, config)  # not the parent's: its head is 5-way
        self.timm_model = timm.create_model(
            config.architecture,
            pretrained=False,
            num_classes=head_outputs(config),
            **(config.model_args or {}),
        )
        self.num_labels = config.num_labels
        self.post_init()

    @property
    def head(self) -> str:
        return head_of_config(self.config)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | list[int] | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple[torch.Tensor, ...]:
        """The wrapper's forward; ordinal heads return the CORN class log-probabilities as logits.
        With `labels`, the loss is cross-entropy on them (the CORN loss) or, for regression,
        the mean squared error on the grade."""
        outputs = super().forward(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        logits = outputs.logits
        if self.head == "ordinal":
            logits = corn_log_probs(logits.float())
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            if self.head == "ordinal":
                loss = F.cross_entropy(logits, labels.long())
            else:
                loss = F.mse_loss(logits[:, 0].float(), labels.float())
        if return_dict is False or (return_dict is None and not self.config.return_dict):
            return tuple(v for v in (loss, logits, outputs.hidden_states) if v is not None)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


OrderedTimmForImageClassification.register_for_auto_class("AutoModelForImageClassification")
