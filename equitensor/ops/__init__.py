"""nn.Modules: TensorProduct (dispatching to a backend), Linear, Gate."""

from .activation import Gate, NormActivation
from .linear import Linear
from .tensor_product import (
    ChannelwiseTensorProduct,
    FullyConnectedTensorProduct,
    TensorProduct,
    channelwise_instructions,
)

__all__ = [
    "ChannelwiseTensorProduct",
    "FullyConnectedTensorProduct",
    "Gate",
    "Linear",
    "NormActivation",
    "TensorProduct",
    "channelwise_instructions",
]
