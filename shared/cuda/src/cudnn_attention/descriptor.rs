//! Owned cuDNN backend descriptors and typed attribute setters over cudarc's raw bindings.

use std::ffi::{c_void, CStr};

use anyhow::{bail, Result};
use cudarc::cudnn::sys;
use sys::cudnnBackendAttributeName_t as Attr;
use sys::cudnnBackendAttributeType_t as Type;
use sys::cudnnBackendDescriptorType_t as Kind;

/// What cuDNN says about its last failure (9.0+), or nothing.
pub fn last_error() -> String {
    let mut message = [0 as std::ffi::c_char; 1024];
    unsafe { sys::cudnnGetLastErrorString(message.as_mut_ptr(), message.len()) };
    unsafe { CStr::from_ptr(message.as_ptr()) }.to_string_lossy().trim().to_string()
}

pub fn check(status: sys::cudnnStatus_t, what: impl FnOnce() -> String) -> Result<()> {
    if status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        return Ok(());
    }
    let detail = last_error();
    let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
    bail!("cuDNN: {} failed with {status:?}{detail}", what())
}

/// One backend descriptor, destroyed on drop.
pub struct Descriptor {
    raw: sys::cudnnBackendDescriptor_t,
    kind: Kind,
}

impl Drop for Descriptor {
    fn drop(&mut self) {
        unsafe { sys::cudnnBackendDestroyDescriptor(self.raw) };
    }
}

impl Descriptor {
    pub fn new(kind: Kind) -> Result<Self> {
        let mut raw = std::ptr::null_mut();
        check(unsafe { sys::cudnnBackendCreateDescriptor(kind, &mut raw) }, || format!("creating a {kind:?}"))?;
        Ok(Self { raw, kind })
    }

    pub fn raw(&self) -> sys::cudnnBackendDescriptor_t {
        self.raw
    }

    fn set_raw(&self, name: Attr, ty: Type, count: usize, values: *const c_void) -> Result<&Self> {
        let status = unsafe { sys::cudnnBackendSetAttribute(self.raw, name, ty, count as i64, values) };
        check(status, || format!("setting {name:?} on a {:?}", self.kind))?;
        Ok(self)
    }

    pub fn i64s(&self, name: Attr, values: &[i64]) -> Result<&Self> {
        self.set_raw(name, Type::CUDNN_TYPE_INT64, values.len(), values.as_ptr().cast())
    }

    pub fn i64(&self, name: Attr, value: i64) -> Result<&Self> {
        self.i64s(name, &[value])
    }

    pub fn boolean(&self, name: Attr, value: bool) -> Result<&Self> {
        // cudnn's BOOLEAN attributes are C `bool` (one byte).
        self.set_raw(name, Type::CUDNN_TYPE_BOOLEAN, 1, (&value as *const bool).cast())
    }

    pub fn float(&self, name: Attr, value: f32) -> Result<&Self> {
        self.set_raw(name, Type::CUDNN_TYPE_FLOAT, 1, (&value as *const f32).cast())
    }

    pub fn reordering(&self, value: sys::cudnnBackendTensorReordering_t) -> Result<&Self> {
        let ty = Type::CUDNN_TYPE_TENSOR_REORDERING_MODE;
        self.set_raw(Attr::CUDNN_ATTR_TENSOR_REORDERING_MODE, ty, 1, (&value as *const sys::cudnnBackendTensorReordering_t).cast())
    }

    pub fn data_type(&self, name: Attr, value: sys::cudnnDataType_t) -> Result<&Self> {
        self.set_raw(name, Type::CUDNN_TYPE_DATA_TYPE, 1, (&value as *const sys::cudnnDataType_t).cast())
    }

    pub fn pointwise_mode(&self, value: sys::cudnnPointwiseMode_t) -> Result<&Self> {
        self.set_raw(Attr::CUDNN_ATTR_POINTWISE_MODE, Type::CUDNN_TYPE_POINTWISE_MODE, 1, (&value as *const sys::cudnnPointwiseMode_t).cast())
    }

    pub fn reduction_operator(&self, value: sys::cudnnReduceTensorOp_t) -> Result<&Self> {
        let ty = Type::CUDNN_TYPE_REDUCTION_OPERATOR_TYPE;
        self.set_raw(Attr::CUDNN_ATTR_REDUCTION_OPERATOR, ty, 1, (&value as *const sys::cudnnReduceTensorOp_t).cast())
    }

    pub fn heuristic_mode(&self, value: sys::cudnnBackendHeurMode_t) -> Result<&Self> {
        self.set_raw(Attr::CUDNN_ATTR_ENGINEHEUR_MODE, Type::CUDNN_TYPE_HEUR_MODE, 1, (&value as *const sys::cudnnBackendHeurMode_t).cast())
    }

    pub fn handle(&self, name: Attr, handle: sys::cudnnHandle_t) -> Result<&Self> {
        self.set_raw(name, Type::CUDNN_TYPE_HANDLE, 1, (&handle as *const sys::cudnnHandle_t).cast())
    }

    pub fn descriptor(&self, name: Attr, value: &Descriptor) -> Result<&Self> {
        self.descriptors(name, &[value])
    }

    pub fn descriptors(&self, name: Attr, values: &[&Descriptor]) -> Result<&Self> {
        let raw: Vec<sys::cudnnBackendDescriptor_t> = values.iter().map(|d| d.raw).collect();
        self.set_raw(name, Type::CUDNN_TYPE_BACKEND_DESCRIPTOR, raw.len(), raw.as_ptr().cast())
    }

    pub fn pointers(&self, name: Attr, values: &[*mut c_void]) -> Result<&Self> {
        self.set_raw(name, Type::CUDNN_TYPE_VOID_PTR, values.len(), values.as_ptr().cast())
    }

    pub fn finalize(self) -> Result<Self> {
        check(unsafe { sys::cudnnBackendFinalize(self.raw) }, || format!("finalizing a {:?}", self.kind))?;
        Ok(self)
    }

    /// One INT64 attribute of a finalized descriptor.
    pub fn get_i64(&self, name: Attr) -> Result<i64> {
        let (mut value, mut count) = (0i64, 0i64);
        let status = unsafe { sys::cudnnBackendGetAttribute(self.raw, name, Type::CUDNN_TYPE_INT64, 1, &mut count, (&mut value as *mut i64).cast()) };
        check(status, || format!("reading {name:?} of a {:?}", self.kind))?;
        Ok(value)
    }

    /// A descriptor-array attribute, read into fresh descriptors of `kind` (at most `max`).
    pub fn get_descriptors(&self, name: Attr, kind: Kind, max: usize) -> Result<Vec<Descriptor>> {
        let made: Vec<Descriptor> = (0..max).map(|_| Descriptor::new(kind)).collect::<Result<_>>()?;
        let mut raw: Vec<sys::cudnnBackendDescriptor_t> = made.iter().map(|d| d.raw).collect();
        let mut count = 0i64;
        let ty = Type::CUDNN_TYPE_BACKEND_DESCRIPTOR;
        let status = unsafe { sys::cudnnBackendGetAttribute(self.raw, name, ty, max as i64, &mut count, raw.as_mut_ptr().cast()) };
        check(status, || format!("reading {name:?} of a {:?}", self.kind))?;
        Ok(made.into_iter().take(count.max(0) as usize).collect())
    }

    /// The numerical notes of a finalized engine descriptor.
    pub fn numerical_notes(&self) -> Result<Vec<sys::cudnnBackendNumericalNote_t>> {
        let mut notes = [sys::cudnnBackendNumericalNote_t::CUDNN_NUMERICAL_NOTE_TENSOR_CORE; 16];
        let mut count = 0i64;
        let name = Attr::CUDNN_ATTR_ENGINE_NUMERICAL_NOTE;
        let ty = Type::CUDNN_TYPE_NUMERICAL_NOTE;
        let status = unsafe { sys::cudnnBackendGetAttribute(self.raw, name, ty, notes.len() as i64, &mut count, notes.as_mut_ptr().cast()) };
        check(status, || format!("reading {name:?} of a {:?}", self.kind))?;
        Ok(notes[..count.clamp(0, 16) as usize].to_vec())
    }
}
