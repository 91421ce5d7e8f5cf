"""An OpenGL reference renderer (moderngl, headless through EGL), for checks and benchmarks.

It renders a textured mesh with the same camera model (OpenCV K, cam_from_model) and the
same Lambert + ambient shading as :class:`pylocalize.render.Renderer`, and reads back RGB
and depth. On machines without a GPU it runs on Mesa's llvmpipe (apt: libegl1
libgl1-mesa-dri; pip: moderngl). Tests compare the two renderers image for image, and
``benchmarks/bench_render.py`` times them side by side.
"""

from __future__ import annotations

import numpy as np

from pylocalize.render import Mesh


def gl_projection(K, w, h, near, far):
    """OpenGL clip matrix for an OpenCV camera (pixel centres at integers)."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    return np.array([
        [2 * fx / w, -2 * K[0, 1] / w, 1 - 2 * (cx + 0.5) / w, 0],
        [0, 2 * fy / h, -(1 - 2 * (cy + 0.5) / h), 0],
        [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
        [0, 0, -1, 0],
    ])


class ModernGLRenderer:
    """The same camera, shading and texture in OpenGL, read back to numpy."""

    VERT = """#version 330
    uniform mat4 mvp; uniform mat4 mv;
    in vec3 pos; in vec2 uv; out vec2 v_uv; out vec3 v_cam;
    void main() { v_uv = uv; v_cam = (mv * vec4(pos, 1.0)).xyz; gl_Position = mvp * vec4(pos, 1.0); }"""
    FRAG = """#version 330
    uniform sampler2D tex; uniform float ambient;
    in vec2 v_uv; in vec3 v_cam; out vec4 color;
    void main() {
        vec3 n = normalize(cross(dFdx(v_cam), dFdy(v_cam)));
        float l = abs(dot(n, normalize(v_cam)));
        color = vec4(texture(tex, v_uv).rgb * (ambient + (1.0 - ambient) * l), 1.0);
    }"""

    def __init__(self, mesh: Mesh, K, w, h, near, far, ambient=0.3):
        import moderngl

        self.ctx = moderngl.create_standalone_context(backend="egl")
        self.w, self.h, self.near, self.far = w, h, near, far
        self.prog = self.ctx.program(vertex_shader=self.VERT, fragment_shader=self.FRAG)
        data = np.hstack([mesh.vertices, mesh.uvs]).astype("f4")
        vbo = self.ctx.buffer(data.tobytes())
        ibo = self.ctx.buffer(mesh.faces.astype("i4").tobytes())
        self.vao = self.ctx.vertex_array(self.prog, [(vbo, "3f 2f", "pos", "uv")], ibo)
        tex = self.ctx.texture(mesh.texture.shape[1::-1], 3, np.flipud(mesh.texture).tobytes())
        tex.filter = (moderngl.LINEAR, moderngl.LINEAR)
        tex.use(0)
        self.prog["ambient"].value = float(ambient)
        self.fbo = self.ctx.framebuffer(self.ctx.renderbuffer((w, h)), self.ctx.depth_renderbuffer((w, h)))
        self.proj = gl_projection(K, w, h, near, far)
        self.ctx.enable(moderngl.DEPTH_TEST)

    def render(self, cam_from_model):
        flip = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV camera axes to OpenGL's
        rgbs, depths = [], []
        for pose in cam_from_model:
            mv = flip @ np.vstack([pose, [0, 0, 0, 1]])
            self.prog["mv"].write(mv.T.astype("f4").tobytes())
            self.prog["mvp"].write((self.proj @ mv).T.astype("f4").tobytes())
            self.fbo.use()
            self.fbo.clear(0.0, 0.0, 0.0, 1.0)
            self.vao.render()
            rgb = np.frombuffer(self.fbo.read(components=3), np.uint8).reshape(self.h, self.w, 3)[::-1]
            depth_bytes = self.fbo.read(components=1, attachment=-1, dtype="f4")
            d = np.frombuffer(depth_bytes, np.float32).reshape(self.h, self.w)[::-1]
            rgbs.append(rgb)
            depths.append(d)
        return np.stack(rgbs), np.stack(depths)
