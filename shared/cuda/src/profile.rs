//! Per-op GPU time: with profiling on, every backend op records a CUDA event before and after
//! its kernels on the stream (no synchronization, so the step runs as it would), and
//! [`CudaBackend::take_profile`] sums the elapsed times by op name. This is how the
//! benchmark says where a step's milliseconds go without Nsight on the GPU machine.

use std::cell::RefCell;
use std::collections::BTreeMap;

use cudarc::driver::{sys, CudaEvent, CudaStream};

/// One op's total over the profiled calls.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpTime {
    pub op: String,
    pub calls: usize,
    pub total_ms: f64,
}

/// Events recorded while profiling is on; `None` when it is off.
#[derive(Default)]
pub(crate) struct Profiler {
    records: RefCell<Option<Vec<(String, CudaEvent, CudaEvent)>>>,
}

/// Records the end event of one op when dropped.
pub(crate) struct OpScope<'a> {
    profiler: &'a Profiler,
    stream: &'a CudaStream,
    name: String,
    start: Option<CudaEvent>,
}

impl Profiler {
    pub(crate) fn set_enabled(&self, on: bool) {
        let mut records = self.records.borrow_mut();
        match (on, records.is_some()) {
            (true, false) => *records = Some(Vec::new()),
            (false, true) => *records = None,
            _ => {}
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.records.borrow().is_some()
    }

    /// A scope for one op, or `None` (and no cost beyond a borrow) when profiling is off.
    pub(crate) fn scope<'a>(&'a self, stream: &'a CudaStream, name: impl FnOnce() -> String) -> Option<OpScope<'a>> {
        self.records.borrow().as_ref()?;
        let start = stream.record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).expect("cannot record a CUDA event");
        Some(OpScope { profiler: self, stream, name: name(), start: Some(start) })
    }

    /// Waits for the recorded work and sums it by op, largest first; clears the records.
    pub(crate) fn take(&self) -> Vec<OpTime> {
        let Some(records) = self.records.borrow_mut().as_mut().map(std::mem::take) else {
            return Vec::new();
        };
        let mut totals: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        for (name, start, end) in records {
            let ms = start.elapsed_ms(&end).expect("cannot read CUDA event times") as f64;
            let entry = totals.entry(name).or_default();
            entry.0 += 1;
            entry.1 += ms;
        }
        let mut ops: Vec<OpTime> = totals.into_iter().map(|(op, (calls, total_ms))| OpTime { op, calls, total_ms }).collect();
        ops.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        ops
    }
}

impl Drop for OpScope<'_> {
    fn drop(&mut self) {
        let end = self.stream.record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).expect("cannot record a CUDA event");
        if let (Some(records), Some(start)) = (self.profiler.records.borrow_mut().as_mut(), self.start.take()) {
            records.push((std::mem::take(&mut self.name), start, end));
        }
    }
}

/// How long the main stream waited, at one buffer size, for the optimizer stream's updates.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WaitTime {
    /// Floats in the buffers waited for (their size names them: ds-1b's output layer is 210M).
    pub elements: usize,
    pub waits: usize,
    pub total_ms: f64,
}

/// With `DSLLM_STREAM_WAITS` on, events around each of the main stream's waits for the
/// optimizer stream ([`crate::backend::CudaBackend::take_stream_waits`]): the time between them
/// is how long the main stream stalled there, which the per-op profile cannot show (it keeps
/// AdamW on the main stream).
#[derive(Default)]
pub(crate) struct WaitProbe {
    records: RefCell<Option<Vec<(usize, CudaEvent, CudaEvent)>>>,
}

impl WaitProbe {
    pub(crate) fn set_enabled(&self, on: bool) {
        *self.records.borrow_mut() = on.then(Vec::new);
    }

    /// Runs `wait` (queues a stream wait on `stream`) between two recorded events when on.
    pub(crate) fn around(&self, stream: &CudaStream, elements: usize, wait: impl FnOnce()) {
        if self.records.borrow().is_none() {
            return wait();
        }
        let record = || stream.record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).expect("cannot record a CUDA event");
        let before = record();
        wait();
        let after = record();
        if let Some(records) = self.records.borrow_mut().as_mut() {
            records.push((elements, before, after));
        }
    }

    /// Waits for the recorded events and sums the stalls by buffer size, largest first.
    pub(crate) fn take(&self) -> Vec<WaitTime> {
        let Some(records) = self.records.borrow_mut().as_mut().map(std::mem::take) else {
            return Vec::new();
        };
        let mut totals: BTreeMap<usize, (usize, f64)> = BTreeMap::new();
        for (elements, before, after) in records {
            let entry = totals.entry(elements).or_default();
            entry.0 += 1;
            entry.1 += before.elapsed_ms(&after).expect("cannot read CUDA event times") as f64;
        }
        let mut waits: Vec<WaitTime> = totals.into_iter().map(|(elements, (waits, total_ms))| WaitTime { elements, waits, total_ms }).collect();
        waits.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        waits
    }
}
