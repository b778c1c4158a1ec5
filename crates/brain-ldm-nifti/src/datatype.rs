//! NIfTI datatype codes and the element codec (bytes in either byte order to and from f64).

use std::fmt;

/// A real scalar NIfTI datatype this crate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `NIFTI_TYPE_UINT8` (code 2).
    U8,
    /// `NIFTI_TYPE_INT8` (code 256).
    I8,
    /// `NIFTI_TYPE_INT16` (code 4).
    I16,
    /// `NIFTI_TYPE_UINT16` (code 512).
    U16,
    /// `NIFTI_TYPE_INT32` (code 8).
    I32,
    /// `NIFTI_TYPE_UINT32` (code 768).
    U32,
    /// `NIFTI_TYPE_INT64` (code 1024).
    I64,
    /// `NIFTI_TYPE_UINT64` (code 1280).
    U64,
    /// `NIFTI_TYPE_FLOAT32` (code 16).
    F32,
    /// `NIFTI_TYPE_FLOAT64` (code 64).
    F64,
}

/// What a header's datatype code denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeKind {
    /// A supported real scalar type.
    Supported(DataType),
    /// A standard NIfTI type this crate does not read (its NIfTI name).
    Unsupported(&'static str),
    /// Not a NIfTI datatype code.
    Unknown,
}

impl DataType {
    /// All supported datatypes.
    pub const ALL: [DataType; 10] = [
        DataType::U8,
        DataType::I8,
        DataType::I16,
        DataType::U16,
        DataType::I32,
        DataType::U32,
        DataType::I64,
        DataType::U64,
        DataType::F32,
        DataType::F64,
    ];

    /// The NIfTI datatype code.
    pub fn code(self) -> i16 {
        match self {
            DataType::U8 => 2,
            DataType::I16 => 4,
            DataType::I32 => 8,
            DataType::F32 => 16,
            DataType::F64 => 64,
            DataType::I8 => 256,
            DataType::U16 => 512,
            DataType::U32 => 768,
            DataType::I64 => 1024,
            DataType::U64 => 1280,
        }
    }

    /// The supported datatype with this code, if any.
    pub fn from_code(code: i32) -> Option<DataType> {
        match Self::classify(code) {
            CodeKind::Supported(t) => Some(t),
            _ => None,
        }
    }

    pub(crate) fn classify(code: i32) -> CodeKind {
        match code {
            2 => CodeKind::Supported(DataType::U8),
            4 => CodeKind::Supported(DataType::I16),
            8 => CodeKind::Supported(DataType::I32),
            16 => CodeKind::Supported(DataType::F32),
            64 => CodeKind::Supported(DataType::F64),
            256 => CodeKind::Supported(DataType::I8),
            512 => CodeKind::Supported(DataType::U16),
            768 => CodeKind::Supported(DataType::U32),
            1024 => CodeKind::Supported(DataType::I64),
            1280 => CodeKind::Supported(DataType::U64),
            1 => CodeKind::Unsupported("binary"),
            32 => CodeKind::Unsupported("complex64"),
            128 => CodeKind::Unsupported("RGB24"),
            255 => CodeKind::Unsupported("all"),
            1536 => CodeKind::Unsupported("float128"),
            1792 => CodeKind::Unsupported("complex128"),
            2048 => CodeKind::Unsupported("complex256"),
            2304 => CodeKind::Unsupported("RGBA32"),
            _ => CodeKind::Unknown,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::I16 | DataType::U16 => 2,
            DataType::I32 | DataType::U32 | DataType::F32 => 4,
            DataType::I64 | DataType::U64 | DataType::F64 => 8,
        }
    }

    /// The numpy name (`uint8`, `int16`, `float32`, ...), as nibabel's `get_data_dtype()` prints it.
    pub fn name(self) -> &'static str {
        match self {
            DataType::U8 => "uint8",
            DataType::I8 => "int8",
            DataType::I16 => "int16",
            DataType::U16 => "uint16",
            DataType::I32 => "int32",
            DataType::U32 => "uint32",
            DataType::I64 => "int64",
            DataType::U64 => "uint64",
            DataType::F32 => "float32",
            DataType::F64 => "float64",
        }
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DataType::F32 | DataType::F64)
    }

    /// The smallest and largest value of an integer type (as f64), `None` for floats.
    pub fn int_range(self) -> Option<(f64, f64)> {
        match self {
            DataType::U8 => Some((0.0, u8::MAX as f64)),
            DataType::I8 => Some((i8::MIN as f64, i8::MAX as f64)),
            DataType::I16 => Some((i16::MIN as f64, i16::MAX as f64)),
            DataType::U16 => Some((0.0, u16::MAX as f64)),
            DataType::I32 => Some((i32::MIN as f64, i32::MAX as f64)),
            DataType::U32 => Some((0.0, u32::MAX as f64)),
            DataType::I64 => Some((i64::MIN as f64, i64::MAX as f64)),
            DataType::U64 => Some((0.0, u64::MAX as f64)),
            DataType::F32 | DataType::F64 => None,
        }
    }

    /// Decodes element `n` of `bytes` (stored in `order`) to f64.
    #[inline(always)]
    pub(crate) fn decode(self, bytes: &[u8], n: usize, order: ByteOrder) -> f64 {
        macro_rules! get {
            ($t:ty, $w:expr) => {{
                let mut b = [0u8; $w];
                b.copy_from_slice(&bytes[n * $w..n * $w + $w]);
                match order {
                    ByteOrder::Little => <$t>::from_le_bytes(b),
                    ByteOrder::Big => <$t>::from_be_bytes(b),
                }
            }};
        }
        match self {
            DataType::U8 => bytes[n] as f64,
            DataType::I8 => bytes[n] as i8 as f64,
            DataType::I16 => get!(i16, 2) as f64,
            DataType::U16 => get!(u16, 2) as f64,
            DataType::I32 => get!(i32, 4) as f64,
            DataType::U32 => get!(u32, 4) as f64,
            DataType::I64 => get!(i64, 8) as f64,
            DataType::U64 => get!(u64, 8) as f64,
            DataType::F32 => get!(f32, 4) as f64,
            DataType::F64 => get!(f64, 8),
        }
    }

    /// Appends `value` to `out` in `order`. Integer types take a value already rounded and
    /// clamped to their range (the cast saturates).
    #[inline(always)]
    pub(crate) fn encode(self, value: f64, out: &mut Vec<u8>, order: ByteOrder) {
        macro_rules! put {
            ($v:expr) => {{
                let v = $v;
                match order {
                    ByteOrder::Little => out.extend_from_slice(&v.to_le_bytes()),
                    ByteOrder::Big => out.extend_from_slice(&v.to_be_bytes()),
                }
            }};
        }
        match self {
            DataType::U8 => out.push(value as u8),
            DataType::I8 => out.push(value as i8 as u8),
            DataType::I16 => put!(value as i16),
            DataType::U16 => put!(value as u16),
            DataType::I32 => put!(value as i32),
            DataType::U32 => put!(value as u32),
            DataType::I64 => put!(value as i64),
            DataType::U64 => put!(value as u64),
            DataType::F32 => put!(value as f32),
            DataType::F64 => put!(value),
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Byte order of a file's header and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ByteOrder {
    /// Little-endian (x86, ARM; what nearly every tool writes).
    #[default]
    Little,
    /// Big-endian (old SPARC/PowerPC files).
    Big,
}

impl ByteOrder {
    /// `"little"` or `"big"`.
    pub fn name(self) -> &'static str {
        match self {
            ByteOrder::Little => "little",
            ByteOrder::Big => "big",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_encode_decode_agree() {
        for t in DataType::ALL {
            assert_eq!(DataType::from_code(t.code() as i32), Some(t));
            for order in [ByteOrder::Little, ByteOrder::Big] {
                let mut buf = Vec::new();
                t.encode(7.0, &mut buf, order);
                t.encode(100.0, &mut buf, order);
                assert_eq!(buf.len(), 2 * t.size());
                assert_eq!(t.decode(&buf, 1, order), 100.0, "{t} {order:?}");
            }
        }
        assert_eq!(DataType::classify(32), CodeKind::Unsupported("complex64"));
        assert_eq!(DataType::classify(3), CodeKind::Unknown);
    }
}
