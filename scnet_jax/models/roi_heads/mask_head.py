"""FCN mask heads: Mask R-CNN / Cascade (4 convs), HTC (plus conv_res for
the mask information flow) and SCNet (12 convs as 6 residual blocks)."""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from scnet_jax.models.layers import (Conv, ConvModule, Deconv2x2,
                                     ResConvStack, kaiming_fan_out,
                                     torch_uniform)


class MaskHead(nn.Module, kw_only=True):
  """x: [K, 14, 14, C] RoI features; res_feat: optional [K, 14, 14, C]
  feature of the previous stage's head (HTC information flow).

  Returns (logits [K, 28, 28, num_classes] float32, feature [K, 14, 14, C]
  after the convs). With `with_conv_res`, res_feat goes through a 1x1
  ConvModule and is added before the convs. output_init: how upsample and
  conv_logits start, "kaiming" (FCNMaskHead.init_weights: kaiming fan_out,
  zero bias) or "torch" (PyTorch's defaults, weights and biases).
  """
  OUTPUT_INITS = ("kaiming", "torch")

  num_classes: int
  num_convs: int = 4
  conv_to_res: bool = False
  with_conv_res: bool = False
  channels: int = 256
  dtype: Any = jnp.float32
  output_init: str = "kaiming"

  @nn.compact
  def __call__(self, x, res_feat: Optional[jnp.ndarray] = None,
               return_logits: bool = True):
    if self.with_conv_res:
      conv_res = ConvModule(self.channels, 1, dtype=self.dtype,
                            name="conv_res")
      if res_feat is not None:
        x = x + conv_res(res_feat)
    x = ResConvStack(self.num_convs, self.channels, self.conv_to_res,
                     dtype=self.dtype, name="convs")(x)
    feature = x
    if not return_logits:
      return None, feature
    torch_init = self.output_init == "torch"
    y = nn.relu(Deconv2x2(self.channels, dtype=self.dtype,
                          torch_init=torch_init, name="upsample")(x))
    fan_in = self.channels
    logits = Conv(self.num_classes, (1, 1),
                  kernel_init=(torch_uniform(fan_in) if torch_init else
                               kaiming_fan_out),
                  bias_init=(torch_uniform(fan_in) if torch_init else
                             nn.initializers.zeros),
                  dtype=self.dtype, name="conv_logits")(y)
    return logits.astype(jnp.float32), feature
