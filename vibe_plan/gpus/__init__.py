"""profile-gpus: measure each GPU's grouped-GEMM time curve for the model's expert FFN."""
