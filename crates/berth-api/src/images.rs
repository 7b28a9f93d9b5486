//! Image responses with the legacy fields bollard's 1.53 models dropped.

use serde::{Deserialize, Serialize};

use crate::models::{ContainerConfig, ImageInspect, ImageSummary};

/// Image inspect body: the 1.53 model plus `ContainerConfig`, which docker-compose 1.29's
/// recreate path dereferences.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageInspectLegacy {
    /// The modern fields.
    #[serde(flatten)]
    pub inspect: ImageInspect,
    /// The config of the container the image was committed from (may be empty).
    #[serde(rename = "ContainerConfig", default)]
    pub container_config: ContainerConfig,
}

/// Image list entry plus `VirtualSize`, sent below API 1.44.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSummaryLegacy {
    /// The modern fields.
    #[serde(flatten)]
    pub summary: ImageSummary,
    /// Equal to `Size`; omitted for API ≥ 1.44.
    #[serde(
        rename = "VirtualSize",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub virtual_size: Option<i64>,
}
