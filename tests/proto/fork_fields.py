"""LayerParameter field numbers of other Caffe forks, as read from their caffe.proto.

Recorded by hand from the stored copies named below (see docs/COMPAT.md for how, and for the
forks that could not be found). Each fork lists:

* ``bvlc``: the numbers >= 100 it uses with BVLC's own name and message type at that number;
* ``own``: its other LayerParameter fields >= 100, number -> (name, type), type being the
  message or scalar type as written in the fork's file.

Only what was read is recorded; nothing here is inferred from another fork.
"""

FORKS = {
    # a stored version of weiliu89/caffe that is not its ssd branch (that is not in the index)
    "weiliu89/caffe@1d74defc": {
        "bvlc": set(range(100, 145)),
        "own": {145: ("norm_param", "NormalizeParameter"),
                146: ("unpooling_param", "UnPoolingParameter")},
    },
    "eric612/MobileNet-YOLO@02c455d6": {
        "bvlc": set(range(100, 148)),
        "own": {149: ("reorg_param", "ReorgParameter"),
                150: ("upsample_param", "UpsampleParameter"),
                200: ("annotated_data_param", "AnnotatedDataParameter"),
                201: ("multibox_loss_param", "MultiBoxLossParameter"),
                203: ("prior_box_param", "PriorBoxParameter"),
                205: ("detection_evaluate_param", "DetectionEvaluateParameter"),
                206: ("norm_param", "NormalizeParameter"),
                211: ("relu6_param", "ReLUParameter"),
                600: ("region_loss_param", "RegionLossParameter"),
                601: ("yolo_detection_output_param", "YoloDetectionOutputParameter"),
                602: ("yolov3_detection_output_param", "Yolov3DetectionOutputParameter"),
                603: ("yolov3_param", "Yolov3Parameter"),
                604: ("yolo_seg_param", "YoloSegParameter"),
                605: ("segmentation_evaluate_param", "SegmentationEvaluateParameter")},
    },
    "NVIDIA/caffe@43774bfa": {
        "bvlc": set(range(100, 147)),
        "own": {6801: ("detectnet_groundtruth_param", "DetectNetGroundTruthParameter"),
                6802: ("detectnet_augmentation_param", "DetectNetAugmentationParameter")},
    },
    "NVIDIA/caffe@6e8194f7": {
        "bvlc": set(range(100, 145)),
        "own": {145: ("forward_type", "Type"), 146: ("backward_type", "Type"),
                147: ("forward_math", "Type"), 148: ("backward_math", "Type"),
                149: ("debug", "bool"), 150: ("cudnn_math_override", "int32"),
                200: ("annotated_data_param", "AnnotatedDataParameter"),
                201: ("multibox_loss_param", "MultiBoxLossParameter"),
                202: ("permute_param", "PermuteParameter"),
                203: ("prior_box_param", "PriorBoxParameter"),
                204: ("detection_output_param", "DetectionOutputParameter"),
                205: ("detection_evaluate_param", "DetectionEvaluateParameter"),
                206: ("norm_param", "NormalizeParameter"),
                207: ("video_data_param", "VideoDataParameter"),
                6801: ("detectnet_groundtruth_param", "DetectNetGroundTruthParameter"),
                6802: ("detectnet_augmentation_param", "DetectNetAugmentationParameter")},
    },
    "intel/caffe@02756436": {
        "bvlc": set(range(100, 147)),
        "own": {147: ("split_param", "SplitParameter"),
                148: ("smooth_l1_loss_param", "SmoothL1LossParameter"),
                149: ("engine", "string"),
                150: ("multinode", "MultinodeLayerParameter"),
                151: ("mn_activation_param", "MnActivationParameter"),
                152: ("box_annotator_ohem_param", "BoxAnnotatorOHEMParameter"),
                153: ("psroi_pooling_param", "PSROIPoolingParameter"),
                154: ("roi_pooling_param", "ROIPoolingParameter"),
                155: ("spatial_dropout_param", "SpatialDropoutParameter"),
                156: ("mn_grad_compress_param", "MnParamGradCompressParameter"),
                158: ("quantization_param", "QuantizationParameter"),
                # the stored file also declares continuation_indicator_param = 200
                200: ("annotated_data_param", "AnnotatedDataParameter"),
                201: ("multibox_loss_param", "MultiBoxLossParameter"),
                202: ("permute_param", "PermuteParameter"),
                203: ("prior_box_param", "PriorBoxParameter"),
                204: ("detection_output_param", "DetectionOutputParameter"),
                205: ("detection_evaluate_param", "DetectionEvaluateParameter"),
                206: ("norm_param", "NormalizeParameter"),
                207: ("video_data_param", "VideoDataParameter")},
    },
    "alexgkendall/caffe-segnet@03d1e9f1": {
        "bvlc": set(range(100, 137)),
        "own": {137: ("upsample_param", "UpsampleParameter"),
                138: ("dense_image_data_param", "DenseImageDataParameter")},
    },
    "xmyqsh/deeplab-v2@ad6cca84": {
        "bvlc": set(range(100, 147)),
        "own": {147: ("domain_transform_param", "DomainTransformParameter"),
                148: ("adaptive_bias_channel_param", "AdaptiveBiasChannelParameter"),
                149: ("bias_channel_param", "BiasChannelParameter"),
                150: ("unique_label_param", "UniqueLabelParameter"),
                151: ("mat_read_param", "MatReadParameter"),
                152: ("dense_crf_param", "DenseCRFParameter"),
                153: ("interp_param", "InterpParameter"),
                154: ("seg_accuracy_param", "SegAccuracyParameter"),
                155: ("mat_write_param", "MatWriteParameter")},
    },
    "hszhao/PSPNet@88d0b3ee": {
        "bvlc": set(range(100, 137)),
        "own": {137: ("bn_param", "BNParameter"),
                140: ("video_data_param", "VideoDataParameter"),
                150: ("roi_pooling_param", "ROIPoolingParameter"),
                160: ("scale_param", "ScaleParameter"),
                161: ("bias_param", "BiasParameter"),
                162: ("batch_reduction_param", "BatchReductionParameter"),
                163: ("interp_param", "InterpParameter"),
                164: ("seg_accuracy_param", "SegAccuracyParameter")},
    },
    "rbgirshick/caffe-fast-rcnn@3d85336d": {
        "bvlc": set(range(100, 147)),
        "own": {8266711: ("roi_pooling_param", "ROIPoolingParameter"),
                8266712: ("smooth_l1_loss_param", "SmoothL1LossParameter")},
    },
    "wuyuebupt/caffe-face@11abb2ce": {
        "bvlc": set(range(100, 147)),
        "own": {147: ("center_loss_param", "CenterLossParameter")},
    },
}


def numbers(fork):
    """Every LayerParameter number >= 100 the fork uses."""
    rec = FORKS[fork]
    return rec["bvlc"] | set(rec["own"])
