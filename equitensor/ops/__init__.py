"""nn.Modules: TensorProduct and ProductBasis (dispatching to backends), Linear, Gate."""

from .activation import Gate, NormActivation
from .linear import Linear
from .product_basis import ProductBasis
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
    "ProductBasis",
    "TensorProduct",
    "channelwise_instructions",
]
