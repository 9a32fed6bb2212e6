//! Packing templated conversations into fixed-length rows: several conversations per row,
//! each its own attention segment (see `Llama::forward_segmented`), targets only on assistant
//! tokens, the rest of a row padding with no target.

use dsllm_model::{TokenBatch, IGNORE_TARGET};

use crate::chat::Encoded;

/// One row of `seq_len` positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedRow {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    /// Segment id per position: the index of the conversation in the packed list; padding
    /// gets `u32::MAX`.
    pub segments: Vec<u32>,
}

/// Segment id of padding positions.
pub const PAD_SEGMENT: u32 = u32::MAX;

/// Packs `examples` in order, starting a new row when the next one does not fit (first fit
/// in order keeps the data order an epoch's shuffle gave). Each conversation of `n` tokens
/// takes `n − 1` positions. Conversations longer than `seq_len + 1` tokens must have been
/// removed before. Returns the rows.
pub fn pack(examples: &[&Encoded], seq_len: usize, pad: u32) -> Vec<PackedRow> {
    let mut rows = Vec::new();
    let mut row = PackedRow { inputs: Vec::with_capacity(seq_len), targets: Vec::with_capacity(seq_len), segments: Vec::with_capacity(seq_len) };
    for (i, example) in examples.iter().enumerate() {
        let (inputs, targets) = example.inputs_targets();
        assert!(inputs.len() <= seq_len, "conversation of {} positions exceeds the row of {seq_len}", inputs.len());
        if row.inputs.len() + inputs.len() > seq_len {
            rows.push(finish(std::mem::replace(&mut row, PackedRow { inputs: vec![], targets: vec![], segments: vec![] }), seq_len, pad));
        }
        row.segments.extend(std::iter::repeat_n(i as u32, inputs.len()));
        row.inputs.extend(inputs);
        row.targets.extend(targets);
    }
    if !row.inputs.is_empty() {
        rows.push(finish(row, seq_len, pad));
    }
    rows
}

fn finish(mut row: PackedRow, seq_len: usize, pad: u32) -> PackedRow {
    row.inputs.resize(seq_len, pad);
    row.targets.resize(seq_len, IGNORE_TARGET);
    row.segments.resize(seq_len, PAD_SEGMENT);
    row
}

/// Rows as one batch and its segment ids.
pub fn batch_of(rows: &[PackedRow], seq_len: usize) -> (TokenBatch, Vec<u32>) {
    let mut batch = TokenBatch { batch_size: rows.len(), seq_len, inputs: Vec::new(), targets: Vec::new() };
    let mut segments = Vec::new();
    for row in rows {
        batch.inputs.extend_from_slice(&row.inputs);
        batch.targets.extend_from_slice(&row.targets);
        segments.extend_from_slice(&row.segments);
    }
    (batch, segments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn example(tokens: Vec<u32>, trained_from: usize) -> Encoded {
        let trained = (0..tokens.len()).map(|i| i >= trained_from).collect();
        Encoded { tokens, trained }
    }

    #[test]
    fn conversations_share_rows_without_crossing() {
        let a = example(vec![1, 2, 3, 4], 2);
        let b = example(vec![5, 6, 7], 1);
        let c = example(vec![8, 9, 10, 11, 12], 3);
        let rows = pack(&[&a, &b, &c], 6, 0);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].inputs, vec![1, 2, 3, 5, 6, 0]);
        assert_eq!(rows[0].targets, vec![IGNORE_TARGET, 3, 4, 6, 7, IGNORE_TARGET]);
        assert_eq!(rows[0].segments, vec![0, 0, 0, 1, 1, PAD_SEGMENT]);
        assert_eq!(rows[1].inputs, vec![8, 9, 10, 11, 0, 0]);
        assert_eq!(rows[1].targets, vec![IGNORE_TARGET, IGNORE_TARGET, 11, 12, IGNORE_TARGET, IGNORE_TARGET]);
        // No target ever names the first token of the next conversation.
        assert!(!rows[0].targets.contains(&5));
    }

    proptest! {
        #[test]
        fn packing_keeps_every_trained_target(lengths in proptest::collection::vec(2usize..12, 1..20), seq_len in 11usize..30) {
            let mut next = 0u32;
            let examples: Vec<Encoded> = lengths.iter().map(|&n| {
                let tokens: Vec<u32> = (0..n as u32).map(|i| next + i).collect();
                next += n as u32;
                example(tokens, n / 2)
            }).collect();
            let refs: Vec<&Encoded> = examples.iter().collect();
            let rows = pack(&refs, seq_len, 0);
            let packed: Vec<u32> = rows.iter().flat_map(|r| r.targets.iter().copied()).filter(|&t| t != IGNORE_TARGET).collect();
            let expected: Vec<u32> = examples.iter().flat_map(|e| e.inputs_targets().1).filter(|&t| t != IGNORE_TARGET).collect();
            prop_assert_eq!(packed, expected);
            for row in &rows {
                prop_assert_eq!(row.inputs.len(), seq_len);
                // A target is the next input of its own segment (or the conversation's last token).
                for i in 0..seq_len - 1 {
                    if row.targets[i] != IGNORE_TARGET && row.segments[i + 1] == row.segments[i] {
                        prop_assert_eq!(row.targets[i], row.inputs[i + 1]);
                    }
                }
            }
        }
    }
}
