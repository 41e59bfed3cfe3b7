"""Network building blocks: MLPs, gated layers, small conv stacks, MADE and the PixelCNN network."""

from vaekit.nn.conv import ConvDecoder, ConvEncoder, GatedConv2d, GatedConvTranspose2d, GridDecoder, GridEncoder
from vaekit.nn.dense import ACTIVATIONS, MLP, GatedDense, activation, dense_features
from vaekit.nn.made import MADE, MaskedLinear
from vaekit.nn.pixelcnn import CategoricalPixelCNN, MaskedConv2d, PixelCNN

__all__ = ["ACTIVATIONS", "MADE", "MLP", "CategoricalPixelCNN", "ConvDecoder", "ConvEncoder", "GatedConv2d",
           "GatedConvTranspose2d", "GatedDense", "GridDecoder", "GridEncoder", "MaskedConv2d", "MaskedLinear",
           "PixelCNN", "activation", "dense_features"]
