"""Would a real 3-D renderer make places recognisable? A frozen-eye probe on a mesh town.

Issue 24's diagnosis (docs/synth.md, "How far from a panorama can a query stand?") says
the frozen ImageNet eye recognises a spot of the synthetic world from where a panorama
was taken and loses it within a few metres, and asks whether depth and parallax that a
2.5-D column raycaster cannot draw (recessed windows, frames, balconies, cornices) would
keep it. This script answers that before anyone rewrites the renderer: it builds a small
town of boxes on a street grid with OpenGL (moderngl on a headless EGL context; Mesa's
llvmpipe on a machine without a GPU), every building its own colour, storeys, window
rhythm, frames, balconies and cornice, drawn either **flat** (the details painted on the
wall) or in **relief** (the same details as 3-D boxes standing out of it, lit by the sun),
supersampled 2x. Panoramas stand every 25 m along the streets (``--crops`` level 90°
views each); a query is a 90° view at a random heading, ``--offsets`` metres along the
street from a panorama, under another sun. It prints the frozen eye's R@1 within 100 m
and the share that find their own panorama, per variant and offset.

Run: ``python benchmarks/mesh_probe.py`` (needs ``moderngl``, in the dev extra, and an
EGL driver: Debian's ``libegl-mesa0`` and ``libgl1-mesa-dri``). Results: docs/synth.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from realism import FrozenEye, standard_error

STREET_M = 14.0  # kerb to kerb
SETBACK_M = 2.0  # pavement in front of the facades
SPACING_M = 25.0  # between panoramas along a street
CAMERA_M = 2.5
TRAIN_SUN, QUERY_SUN = (0.4, 0.3, 0.8), (-0.5, 0.2, 0.6)
TRAIN_AMBIENT, QUERY_AMBIENT = 0.45, 0.55
SKY = (0.55, 0.7, 0.95)

# Unit cube: its 12 triangles and each triangle's outward normal.
_CORNERS = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float32)
_FACES = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                   [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])  # fmt: skip
_NORMALS = np.repeat(np.array([[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1],
                               [0, 0, 1]], np.float32), 2, axis=0)  # fmt: skip


class Town:
    """Triangles [N, 9] (position, normal, colour) of a grid town, and its street lines."""

    def __init__(self, blocks: int, block_m: float, relief: bool, seed: int) -> None:
        self.rng = np.random.default_rng(seed)  # same seed: same town in both variants
        self.relief = relief
        self.pitch = block_m + STREET_M
        self.parts: list[np.ndarray] = []
        size = blocks * self.pitch
        self.box((-50, -50, -0.2), (size + 50, size + 50, 0.0), (0.32, 0.32, 0.34))  # road
        for bx in range(blocks):
            for by in range(blocks):
                self.block(bx * self.pitch + STREET_M / 2, by * self.pitch + STREET_M / 2, block_m)
        self.triangles = np.concatenate(self.parts)
        # Panoramas: on the centre line of every inner street, every SPACING_M.
        lines = np.arange(1, blocks) * self.pitch
        stops = np.arange(SPACING_M / 2, size, SPACING_M)
        along_y = [(line, s, 1) for line in lines for s in stops]  # street along y
        along_x = [(s, line, 0) for line in lines for s in stops]
        self.panoramas = np.array(along_y + along_x, float)  # x, y, axis of the street

    def box(self, low, high, colour) -> None:
        low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        vertices = low + _CORNERS[_FACES.ravel()] * (high - low)
        normals = np.repeat(_NORMALS, 3, axis=0)
        colours = np.tile(np.asarray(colour, np.float32), (len(vertices), 1))
        self.parts.append(np.hstack([vertices, normals, colours]).astype(np.float32))

    def on_facade(self, origin, along, out, span, depth, heights, colour) -> None:
        """A box spanning ``span`` along the facade, ``depth`` out of it, ``heights`` up."""
        corners = np.array([origin + along * a + out * d for a in span for d in depth])
        self.box((*corners.min(0), heights[0]), (*corners.max(0), heights[1]), colour)

    def detail(self, origin, along, out, span, relief_m, heights, colour, layer: int) -> None:
        """A facade detail: standing ``relief_m`` out in relief; painted on when flat, as a
        film ``layer`` cm thick (a pane's layer above its frame's, so neither hides)."""
        depth = (0.0, relief_m if self.relief else 0.01 * layer)
        self.on_facade(origin, along, out, span, depth, heights, colour)

    def block(self, x0: float, y0: float, size: float) -> None:
        x1, y1 = x0 + size, y0 + size
        # (corner the facade starts at, direction along it, outward normal to the street)
        sides = [((x0, y0), (1, 0), (0, -1)), ((x1, y0), (0, 1), (1, 0)),
                 ((x1, y1), (-1, 0), (0, 1)), ((x0, y1), (0, -1), (-1, 0))]  # fmt: skip
        self.box((x0, y0, -0.05), (x1, y1, 0.15), (0.55, 0.55, 0.5))  # pavement
        for corner, along, out in sides:
            corner, along, out = (np.array(v, float) for v in (corner, along, out))
            facade = corner - out * SETBACK_M
            start = 3.0
            while start < size - 8:
                width = min(self.rng.uniform(8, 18), size - 3 - start)
                self.building(facade, along, out, start, width)
                start += width + self.rng.uniform(0, 1.0)

    def building(self, facade, along, out, start: float, width: float) -> None:
        rng = self.rng
        floors, floor_m = int(rng.integers(2, 7)), rng.uniform(2.8, 3.6)
        height = floors * floor_m
        wall, trim = rng.uniform(0.3, 0.95, 3), rng.uniform(0.2, 1.0, 3)
        glass = np.array([0.12, 0.14, 0.18]) * rng.uniform(0.7, 1.5)
        windows = max(1, int(width / rng.uniform(2.2, 3.5)))
        win_w, win_h = rng.uniform(0.8, 1.4), rng.uniform(1.2, 1.8)
        balconies, cornice = rng.random() < 0.4, rng.random() < 0.6
        self.on_facade(facade, along, out, (start, start + width), (-10, 0), (0, height), wall)
        for floor in range(floors):
            sill = floor * floor_m + 0.9
            for k in range(windows):
                mid = start + (k + 0.5) * width / windows
                frame = (mid - win_w / 2 - 0.15, mid + win_w / 2 + 0.15)
                self.detail(
                    facade, along, out, frame, 0.12, (sill - 0.15, sill + win_h + 0.15), trim, 2
                )
                pane = (mid - win_w / 2, mid + win_w / 2)
                self.detail(facade, along, out, pane, 0.14, (sill, sill + win_h), glass, 3)
                if balconies and floor > 0:
                    slab = (mid - win_w / 2 - 0.4, mid + win_w / 2 + 0.4)
                    self.detail(facade, along, out, slab, 1.0, (sill - 0.9, sill - 0.75), trim, 4)
        if cornice:
            self.detail(
                facade, along, out, (start, start + width), 0.6, (height - 0.5, height), trim, 5
            )


class Camera:
    """Level 90° views of a triangle soup, rendered at 2x and box-filtered to ``size``."""

    def __init__(self, triangles: np.ndarray, size: int) -> None:
        import moderngl  # after torch (see main): Mesa's LLVM and triton's clash otherwise

        self.size = size
        try:
            self.ctx = moderngl.create_standalone_context(backend="egl")
        except Exception as error:  # glcontext raises a bare Exception
            raise SystemExit(
                f"no headless OpenGL here ({error}): install an EGL driver, e.g. Debian's "
                "libegl-mesa0 and libgl1-mesa-dri (Mesa's llvmpipe needs no GPU)"
            ) from error
        self.program = self.ctx.program(
            vertex_shader="""#version 330
            uniform mat4 mvp; in vec3 p; in vec3 n; in vec3 c; out vec3 col; out vec3 nrm;
            void main() { gl_Position = mvp * vec4(p, 1.0); col = c; nrm = n; }""",
            fragment_shader="""#version 330
            uniform vec3 sun; uniform float ambient; in vec3 col; in vec3 nrm; out vec4 f;
            void main() {
                float light = ambient + (1.0 - ambient) * max(dot(nrm, sun), 0.0);
                f = vec4(col * light, 1.0);
            }""",
        )  # fmt: skip
        buffer = self.ctx.buffer(triangles.tobytes())
        self.vao = self.ctx.vertex_array(self.program, [(buffer, "3f 3f 3f", "p", "n", "c")])
        side = 2 * size
        colour, depth = (
            self.ctx.renderbuffer((side, side)),
            self.ctx.depth_renderbuffer((side, side)),
        )
        self.fbo = self.ctx.framebuffer(colour, depth)
        self.fbo.use()
        self.ctx.enable(self.ctx.DEPTH_TEST)
        near, far = 0.3, 600.0
        depth_row = [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)]
        self.projection = np.array([[1, 0, 0, 0], [0, 1, 0, 0], depth_row, [0, 0, -1, 0]],
                                   np.float32)  # fmt: skip

    def views(self, xy: np.ndarray, yaw: np.ndarray, sun, ambient: float) -> np.ndarray:
        """Images uint8 [N, size, size, 3] from (x, y) at yaw (radians from +x, to +y)."""
        sun = np.asarray(sun, np.float32)
        self.program["sun"].value = tuple(sun / np.linalg.norm(sun))
        self.program["ambient"].value = ambient
        side, out = 2 * self.size, []
        for (x, y), angle in zip(xy, yaw, strict=True):
            forward = np.array([np.cos(angle), np.sin(angle), 0.0])
            right = np.cross(forward, [0.0, 0.0, 1.0])
            view = np.eye(4, dtype=np.float32)
            view[0, :3], view[1, :3], view[2, :3] = right, np.cross(right, forward), -forward
            view[:3, 3] = -view[:3, :3] @ np.array([x, y, CAMERA_M])
            self.program["mvp"].write((self.projection @ view).T.copy().tobytes())
            self.fbo.clear(*SKY, 1.0)
            self.vao.render()
            image = np.frombuffer(self.fbo.read(components=3), np.uint8).reshape(side, side, 3)
            image = image[::-1].reshape(self.size, 2, self.size, 2, 3).mean(axis=(1, 3))
            out.append(image.astype(np.uint8))
        return np.stack(out)


def probe(args, relief: bool, eye: FrozenEye) -> list[dict]:
    """R@1 within 100 m and own-panorama share at each offset, for one variant."""
    town = Town(args.blocks, args.block_m, relief, args.seed)
    camera = Camera(town.triangles, args.size)
    panoramas = town.panoramas
    start = time.perf_counter()
    headings = np.arange(args.crops) * 2 * np.pi / args.crops
    gallery = np.concatenate([
        camera.views(np.repeat(p[None, :2], args.crops, 0), headings, TRAIN_SUN, TRAIN_AMBIENT)
        for p in panoramas])  # fmt: skip
    render_s = time.perf_counter() - start
    features = eye(gallery)
    owner = np.repeat(np.arange(len(panoramas)), args.crops)
    rng = np.random.default_rng(args.seed + 1)
    count = min(args.queries, len(panoramas))
    picked = rng.choice(len(panoramas), count, replace=False)
    yaw = rng.uniform(0, 2 * np.pi, count)
    sign = rng.choice([-1.0, 1.0], count)
    rows = []
    for offset in args.offsets:
        xy = panoramas[picked, :2].copy()
        axis = panoramas[picked, 2].astype(int)  # 1: the street runs along y
        xy[np.arange(count), axis] += sign * offset
        queries = eye(camera.views(xy, yaw, QUERY_SUN, QUERY_AMBIENT))
        best = owner[(queries @ features.T).argmax(axis=1)]
        error = np.hypot(*(panoramas[best, :2] - xy).T)
        hit = float(np.mean(error <= 100))
        rows.append({"variant": "relief" if relief else "flat", "offset_m": offset,
                     "r1_100m": hit, "se": standard_error(hit, count),
                     "own": float(np.mean(best == picked)), "queries": count,
                     "panoramas": len(panoramas), "triangles": len(town.triangles) // 3,
                     "ms_per_view": 1000 * render_s / len(gallery)})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=8, help="blocks per side of the town")
    parser.add_argument("--block-m", type=float, default=70.0, help="block side in metres")
    parser.add_argument("--queries", type=int, default=250)
    parser.add_argument("--crops", type=int, default=4, help="level 90° views per panorama")
    parser.add_argument("--offsets", type=float, nargs="+", default=[0, 8, 16])
    parser.add_argument("--size", type=int, default=128, help="view size in pixels")
    parser.add_argument("--stage", type=int, default=3, help="frozen eye's feature stage")
    parser.add_argument("--variants", nargs="+", default=["flat", "relief"],
                        choices=["flat", "relief"])  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.blocks < 2:
        parser.error("--blocks must be at least 2 (panoramas stand on the inner streets)")
    torch.set_num_threads(2)
    eye = FrozenEye(args.stage, args.size)  # torch and triton load before the GL driver
    print("| variant | offset | frozen, R@1 ≤ 100 m | finds its own panorama | queries | panoramas "
          "| triangles | ms per view |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for variant in args.variants:
        rows += probe(args, variant == "relief", eye)
        for r in rows[-len(args.offsets) :]:
            hit = f"{100 * r['r1_100m']:.1f} ± {100 * r['se']:.1f} %"
            print(f"| {r['variant']} | {r['offset_m']:g} m | {hit} | {100 * r['own']:.1f} % | "
                  f"{r['queries']} | {r['panoramas']} | {r['triangles']:,} | "
                  f"{r['ms_per_view']:.1f} |", flush=True)  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"config": vars(args) | {"out": str(args.out)},
                                        "rows": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
