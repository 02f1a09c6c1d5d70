//! Pane info: which firing of a window an output element came from.

use serde::{Deserialize, Serialize};

/// When a pane fired relative to the watermark (Beam's `PaneInfo.Timing`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Timing {
    /// Before the watermark passed the end of the window.
    Early,
    /// The firing when the watermark passed the end of the window.
    OnTime,
    /// After the watermark passed the end of the window.
    Late,
    /// Not produced by a grouping: elements that never went through a trigger.
    Unknown,
}

/// Describes the pane an element was emitted in (Beam's `PaneInfo`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct PaneInfo {
    /// Early, on time or late.
    pub timing: Timing,
    /// 0 for the first pane of a window, counting up.
    pub index: u64,
    /// Index among the non-early panes, or -1 for an early pane.
    pub non_speculative_index: i64,
    /// Whether this is the first pane of its window.
    pub is_first: bool,
    /// Whether this is the last pane of its window: no more will follow.
    pub is_last: bool,
    /// Whether this element takes back an earlier pane's output rather than adding to it
    /// (accumulating-and-retracting mode): a grouping downstream removes it.
    pub retraction: bool,
}

impl PaneInfo {
    /// The pane of an element that has not been through a grouping (Beam's `NO_FIRING`).
    pub const NO_FIRING: PaneInfo = PaneInfo {
        timing: Timing::Unknown,
        index: 0,
        non_speculative_index: 0,
        is_first: true,
        is_last: true,
        retraction: false,
    };

    /// The single on-time pane of a window under the default trigger: first and last.
    pub const ON_TIME_AND_ONLY_FIRING: PaneInfo = PaneInfo {
        timing: Timing::OnTime,
        index: 0,
        non_speculative_index: 0,
        is_first: true,
        is_last: true,
        retraction: false,
    };
}

impl Default for PaneInfo {
    fn default() -> Self {
        PaneInfo::NO_FIRING
    }
}
