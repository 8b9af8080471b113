//! Errors the Task service returns, with the gRPC code containerd acts on (it treats
//! NotFound on Kill as "already exited", for one).

use containerd_shim_protos::ttrpc::{self, Code};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct ShimError {
    pub code: Code,
    pub msg: String,
}

impl ShimError {
    fn new(code: Code, msg: impl Into<String>) -> ShimError {
        ShimError {
            code,
            msg: msg.into(),
        }
    }
    pub fn not_found(msg: impl Into<String>) -> ShimError {
        ShimError::new(Code::NOT_FOUND, msg)
    }
    pub fn exists(msg: impl Into<String>) -> ShimError {
        ShimError::new(Code::ALREADY_EXISTS, msg)
    }
    pub fn invalid(msg: impl Into<String>) -> ShimError {
        ShimError::new(Code::INVALID_ARGUMENT, msg)
    }
    pub fn precondition(msg: impl Into<String>) -> ShimError {
        ShimError::new(Code::FAILED_PRECONDITION, msg)
    }
    pub fn unimplemented(msg: impl Into<String>) -> ShimError {
        ShimError::new(Code::UNIMPLEMENTED, msg)
    }
    pub fn internal(msg: impl Into<String>) -> ShimError {
        ShimError::new(Code::INTERNAL, msg)
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code, e.msg))
    }
}
