// Prepended to every shader file (by the wgpu backend at load time and by build.rs when it validates).
//
// Conventions shared by all shaders:
// - binding 0 is the op's parameter block `p` (a uniform struct whose first eight fields o1..o8 are the
//   word offsets of the views bound at bindings 1..8; scalars follow);
// - every storage binding is `read_write`, because views of one flat buffer (parameters, activations)
//   are often bound together and wgpu only lets a buffer appear in several bindings of a dispatch
//   when every use is read-write;
// - 1-D launches larger than 65,535 workgroups fold into a 2-D grid; `flat_group` unfolds them.

const IGNORE_TARGET: u32 = 0xffffffffu;

fn flat_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
