"""The desktop app (pytest-qt, offscreen): open, play, paint, merge, relabel, undo, crash safety."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("pytestqt")
pytest.importorskip("pyqtgraph")

ROOT = Path(__file__).resolve().parents[1]
try:
    import tem_operando_gui  # noqa: F401
except ImportError:  # an editable install made before gui/ was a package root
    sys.path.insert(0, str(ROOT / "gui"))

from test_corrections import make_results

from tem_operando.results import ResultStore
from tem_operando.results import corrections as corr


@pytest.fixture(scope="module", autouse=True)
def gc_in_the_gui_thread(qapp):
    """As in the app: Python's cyclic collector runs only in the GUI thread while these tests run
    (a collection in the journal-replay thread that freed an earlier test's window deadlocked
    against the GUI thread), and automatic collection is back on for the tests after them."""
    from tem_operando_gui.app import gc_in_gui_thread, stop_gc_in_gui_thread

    gc_in_gui_thread()
    yield
    stop_gc_in_gui_thread()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_results(tmp_path_factory.mktemp("gui"), n_frames=14, size=128)


@pytest.fixture
def folder(pristine, tmp_path):
    shutil.copytree(pristine, tmp_path / "res")
    return tmp_path / "res"


@pytest.fixture
def window(folder, qtbot, tmp_path):
    from qtpy import QtCore
    from tem_operando_gui.app import MainWindow

    settings = QtCore.QSettings(str(tmp_path / "gui.ini"), QtCore.QSettings.Format.IniFormat)
    win = MainWindow(folder, settings=settings, ask=False)
    qtbot.addWidget(win)
    win.show()
    return win


def test_garbage_is_collected_in_the_gui_thread_only(qtbot, tmp_path):
    """Automatic collection is off once a window exists; the GUI thread's timer frees a dropped
    window caught in a reference cycle."""
    import gc
    import weakref

    from qtpy import QtCore, QtWidgets
    from tem_operando_gui.app import MainWindow, stop_gc_in_gui_thread

    stop_gc_in_gui_thread()  # undo the module fixture's switch: the window must make it itself
    assert gc.isenabled()
    win = MainWindow(settings=QtCore.QSettings(str(tmp_path / "g.ini"), QtCore.QSettings.Format.IniFormat), ask=False)
    qtbot.addWidget(win)
    assert not gc.isenabled()
    w = QtWidgets.QWidget()
    QtWidgets.QMenu(w).addAction("x")
    w.cycle = w  # only the cyclic collector can free it
    ref = weakref.ref(w)
    del w
    junk = [[] for _ in range(5 * gc.get_threshold()[0])]  # past the first generation's threshold
    assert ref() is not None
    qtbot.waitUntil(lambda: ref() is None, timeout=5000)
    del junk


def _free_point(model, r=5):
    from scipy import ndimage

    _, i = model.masks()
    ys, xs = np.nonzero(ndimage.binary_erosion(i == 0, iterations=r + 14))
    return float(xs[len(xs) // 2]), float(ys[len(ys) // 2])


def _settled(qtbot, m):
    """Wait for the window's background journal replay (the GUI thread keeps running meanwhile)."""
    qtbot.waitUntil(lambda: not m.busy, timeout=20000)


def test_model_without_qt(folder):
    from tem_operando_gui.models import ReviewModel, review_queue

    m = ReviewModel(folder)
    seen = []
    m.frame_changed.connect(seen.append)
    m.step(2)
    m.jump_to_time(m.time_of(5))
    assert seen == [2, 5]
    assert m.frame_image().shape == tuple(m.frame_shape)
    q = review_queue(m.tables["frames"].assign(confidence=np.linspace(0.2, 1, len(m.tables["frames"]))))
    assert 0 in set(q["frame"])
    assert "qtpy" not in sys.modules or True  # the model module itself imports no Qt
    import tem_operando_gui.models as mm

    assert "qtpy" not in mm.__dict__ and "QtCore" not in mm.__dict__


def test_corrections_replay_in_the_background_and_coalesce(folder):
    """With ``post`` (the window's hand-off to the GUI thread) a stroke is journaled and shown at
    once; the replay runs in a thread, strokes made meanwhile are replayed together, and the end
    state is the same as a synchronous replay of the journal."""
    from tem_operando_gui.models import ReviewModel

    posted = []
    m = ReviewModel(folder, post=posted.append)  # a stand-in event loop: callables queue up here
    reloads = []
    m.tables_changed.connect(lambda: reloads.append(1))
    m.set_frame(3)
    x, y = _free_point(m)
    tables_before = {k: v.copy() for k, v in m.tables.items()}
    m.paint([(x, y)], cls=2, radius=4)
    assert m.busy and m.masks()[0][int(y), int(x)] == 2  # shown before the replay has ended
    m.erase([(x, y)], radius=6)
    assert m.masks()[0][int(y), int(x)] == 0
    m.paint([(x, y)], cls=1, radius=3)
    assert m.masks()[0][int(y), int(x)] == 1
    assert [e["kind"] for e in m.store.corrections()] == ["paint", "paint", "paint"]
    assert not reloads and m.tables["objects"].equals(tables_before["objects"])  # nothing loaded behind the GUI's back
    assert m.wait_idle(timeout_s=60)
    assert not m.busy and len(reloads) == 1
    for fn in posted:  # the queued hand-offs arrive late: nothing loads twice
        fn()
    assert len(reloads) == 1
    assert m.masks()[0][int(y), int(x)] == 1
    n_objects = len(m.tables["objects"].query("frame == 3"))
    tracks = m.store.path("tracks.csv").read_bytes()
    corr.recompute(ResultStore(folder))  # a fresh synchronous replay of the same journal
    assert m.store.path("tracks.csv").read_bytes() == tracks
    assert len(ResultStore(folder).read_table("objects").query("frame == 3")) == n_objects
    assert m.corrected_frames() == [3]
    m.close()


def test_open_play_paint_merge_relabel_undo(window, qtbot, folder):
    m = window.model
    store = ResultStore(folder)
    assert window.video.image.image is not None
    # play: the timer advances frames
    m.speed = 64.0
    m.set_playing(True)
    qtbot.waitUntil(lambda: m.current >= 3, timeout=5000)
    m.set_playing(False)
    # step with the keyboard-equivalent actions
    m.set_frame(4)
    assert window.transport.slider.value() == 4
    # paint a reacted blob with the brush tool through the view
    m.set_tool("brush")
    x, y = _free_point(m)
    n_here = len(store.read_table("objects").query("frame == 4"))
    window.video.stroke_start(x, y)
    window.video.stroke_add(x, y)
    window.video.stroke_add(x + 3, y + 1)
    window.video.stroke_finish()
    j = list(store.corrections())
    assert [e["kind"] for e in j] == ["paint"] and j[0]["frame"] == 4 and j[0]["cls"] == 2
    assert m.masks()[0][int(y), int(x)] == 2  # on screen at once; the tables follow from a background replay
    _settled(qtbot, m)
    assert len(store.read_table("objects").query("frame == 4")) == n_here + 1
    assert m.masks()[0][int(y), int(x)] == 2
    n_tracks = len(store.read_table("tracks"))
    # merge two tracks
    tr = m.tables["tracks"].sort_values("n_frames", ascending=False)
    a, b = (int(t) for t in tr["track_id"].iloc[:2])
    m.select(a)
    window.tools.merge_with.setValue(b)
    window.tools.merge_btn.click()
    _settled(qtbot, m)
    ids = set(store.read_table("tracks")["track_id"])
    assert a in ids and b not in ids
    assert window.tracks.dfm.rowCount() == len(ids)
    # relabel a phase on a frame that has a phases row
    ph = store.read_table("phases")
    f = int(ph["frame"].iloc[0])
    other = [c[5:] for c in ph.columns if c.startswith("frac_") and c[5:] != ph["best_phase"].iloc[0]][0]
    m.relabel_phase(other, frame=f)
    _settled(qtbot, m)
    assert store.read_table("phases").set_index("frame").loc[f, "best_phase"] == other
    # undo (Ctrl+Z) twice: the relabel and the merge go; the paint stays
    qtbot.keyClick(window, "z", modifier=__import__("qtpy").QtCore.Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: [e["kind"] for e in store.corrections()][-1] == "undo", timeout=3000)
    m.undo()
    _settled(qtbot, m)
    assert store.read_table("phases").set_index("frame").loc[f, "best_phase"] == ph.set_index("frame").loc[f, "best_phase"]
    assert b in set(store.read_table("tracks")["track_id"])
    assert len(store.read_table("tracks")) == n_tracks
    kinds = [e["kind"] for e in store.corrections()]
    assert kinds == ["paint", "merge_tracks", "relabel_phase", "undo", "undo"]
    # the tables equal a fresh replay of the journal
    before = store.path("tracks.csv").read_bytes()
    corr.recompute(ResultStore(folder))
    assert store.path("tracks.csv").read_bytes() == before


def test_exports(window, tmp_path):
    from tem_operando_gui.export import export_annotations, export_movie, export_png, export_tables

    m = window.model
    m.set_frame(2)
    x, y = _free_point(m)
    m.paint([(x, y)], cls=2, radius=4)
    ann = export_annotations(m, tmp_path / "ann")
    assert (ann / "frames.npz").is_file()
    assert len(export_tables(m, tmp_path / "csv")) >= 4
    assert export_png(window.video, tmp_path / "v.png").stat().st_size > 1000
    assert export_movie(m, tmp_path / "m.gif", frames=range(4)).stat().st_size > 1000
    assert export_movie(m, tmp_path / "m.mp4", frames=range(4)).stat().st_size > 1000


def test_settings_remembered(folder, qtbot, tmp_path):
    from qtpy import QtCore
    from tem_operando_gui.app import MainWindow

    ini = str(tmp_path / "s.ini")
    win = MainWindow(folder, settings=QtCore.QSettings(ini, QtCore.QSettings.Format.IniFormat), ask=False)
    qtbot.addWidget(win)
    win.tools.radius_box.setValue(9.5)
    win.overlay_boxes["masks"].setChecked(False)
    win.close()
    win2 = MainWindow(folder, settings=QtCore.QSettings(ini, QtCore.QSettings.Format.IniFormat), ask=False)
    qtbot.addWidget(win2)
    assert win2.model.brush_radius == 9.5 and not win2.video.show["masks"]


def test_open_recording_analyses_in_a_worker(tmp_path, qtbot):
    from qtpy import QtCore
    from tem_operando_gui.app import MainWindow

    from tem_operando.synth import make_session, write_session

    rec = write_session(make_session("particles", n_frames=6, size_px=96, seed=1), tmp_path / "r.hspy")
    win = MainWindow(settings=QtCore.QSettings(str(tmp_path / "a.ini"), QtCore.QSettings.Format.IniFormat), ask=False)
    qtbot.addWidget(win)
    win.open_path(rec)
    assert win.worker is not None
    with qtbot.waitSignal(win.worker.done, timeout=60000):
        pass
    qtbot.waitUntil(lambda: win.model is not None, timeout=5000)
    assert win.model.n_frames == 6


KILL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {gui!r})
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from qtpy import QtCore, QtWidgets
    from tem_operando_gui.app import MainWindow
    app = QtWidgets.QApplication([])
    win = MainWindow({folder!r}, settings=QtCore.QSettings({ini!r}, QtCore.QSettings.Format.IniFormat), ask=False)
    m = win.model
    m.set_frame(3)
    def hang(*a, **k):   # die mid-edit: after the journal, before the tables are rewritten
        print("JOURNALED", flush=True)
        time.sleep(600)
    m.corrector.recompute = hang
    m.paint([({x}, {y})], cls=2, radius=4)
""")


def test_killed_mid_edit_loses_nothing(folder, tmp_path):
    from tem_operando_gui.models import ReviewModel

    m0 = ReviewModel(folder)
    m0.set_frame(3)
    x, y = _free_point(m0)
    m0.close()
    before = (folder / "objects.csv").read_bytes()
    script = KILL_SCRIPT.format(gui=str(ROOT / "gui"), folder=str(folder), ini=str(tmp_path / "k.ini"), x=x, y=y)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()  # read in a thread: a child that hangs silently must not hang the test
    threading.Thread(target=lambda: ([lines.put(ln) for ln in p.stdout], lines.put("")), daemon=True).start()
    try:
        line, deadline = "", time.time() + 60
        while "JOURNALED" not in line:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.time()))
            except queue.Empty:
                raise AssertionError("the GUI process did not reach the edit within 60 s") from None
            if not line:  # the child closed its output: it ended before the edit
                p.wait(10)
                raise AssertionError(p.stderr.read())
        os.kill(p.pid, signal.SIGKILL)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)
    assert p.returncode == -signal.SIGKILL
    assert (folder / "objects.csv").read_bytes() == before  # killed before the tables were rewritten
    m = ReviewModel(folder)
    assert [e["kind"] for e in m.store.corrections()] == ["paint"]
    m.apply()  # reopening replays the journal
    m.set_frame(3)
    assert m.masks()[0][int(y), int(x)] == 2
    assert 3 in set(m.tables["frames"].query("corrected")["frame"])


def _tiny_retrain():
    from tem_operando.pipeline.retrain import RetrainOptions

    return RetrainOptions(init="default", epochs=1, steps_per_epoch=3, batch=2, crop=64, synthetic_sessions=1,
                          calibration_sessions=2)


def test_retrain_button_fine_tunes_then_reprocesses_keeping_corrections(window, qtbot, folder, tmp_path, monkeypatch):
    """Issue 8 from the GUI: corrections → fine-tuning in a worker → the session reprocessed with the new model."""
    from tem_operando.segment.modelfile import card_path, sha256

    monkeypatch.setenv("TEM_OPERANDO_DATA_DIR", str(tmp_path / "data"))
    m = window.model
    assert not window.tools.retrain_btn.isEnabled()  # nothing corrected yet
    m.set_frame(4)
    x, y = _free_point(m)
    m.paint([(x, y), (x + 2, y)], cls=2, radius=4)
    _settled(qtbot, m)
    assert window.tools.retrain_btn.isEnabled() and "1 frame corrected" in window.tools.corrected_label.text()
    window.retrain("my-material", options=_tiny_retrain())
    steps = []
    window.worker.progress.connect(lambda s, n: steps.append((s, n)))
    with qtbot.waitSignal(window.worker.done, timeout=120000) as sig:
        pass
    path = Path(sig.args[0])
    assert path == tmp_path / "data" / "models" / "my-material.pt" and path.is_file()
    assert "## Hand-corrected frames used" in card_path(path).read_text()
    assert steps and steps[-1] == (3, 3)
    # reprocessing with the new model starts by itself (ask=False) and reopens the folder
    msgs = []
    window.statusBar().messageChanged.connect(msgs.append)
    try:
        qtbot.waitUntil(lambda: window.model is not None, timeout=60000)
    except Exception:
        raise AssertionError(msgs)
    assert window.model.summary.get("model_sha256") == sha256(path), window.statusBar().currentMessage()
    store = ResultStore(folder)
    assert store.read_summary()["model"] == "my-material"
    c, i = corr.effective_masks(store, 4)
    assert c[int(y), int(x)] == 2 and i[int(y), int(x)] > 0  # the hand correction won over the new prediction
    assert 4 in window.model.corrected_frames()
    tr = store.read_table("tracks")
    assert (tr["model_sha256"] == sha256(path)).all()


def test_retrain_can_be_cancelled(window, qtbot, folder, tmp_path, monkeypatch):
    from tem_operando.pipeline.retrain import RetrainOptions

    monkeypatch.setenv("TEM_OPERANDO_DATA_DIR", str(tmp_path / "data"))
    m = window.model
    m.set_frame(2)
    x, y = _free_point(m)
    m.paint([(x, y)], cls=1, radius=4)
    window.retrain("never", options=RetrainOptions(init="default", epochs=50, steps_per_epoch=50, batch=2, crop=64,
                                                   synthetic_sessions=1), reprocess=True)
    window.worker.progress.connect(lambda s, n: s >= 2 and window.cancel_btn.click())
    with qtbot.waitSignal(window.worker.cancelled, timeout=120000):
        pass
    assert not (tmp_path / "data" / "models" / "never.pt").exists()
    assert window.model is not None and window.cancel_btn.isHidden()


def test_apply_calibration_sends_only_what_the_user_changed(window, qtbot, monkeypatch):
    """The pixel box shows the analysis' nm/px rounded to its decimals: applying an unchanged panel edits
    nothing, changing the rate edits the rate alone (not a rounded pixel size too)."""
    m, tools = window.model, window.tools
    target = m.nm_per_px * 1.234567891  # a pixel size the box shows rounded
    m.edit_calibration(nm_per_px=target)
    qtbot.waitUntil(lambda: abs(m.nm_per_px - target) < 1e-12 and abs(tools.nm_box.value() - target) < 1e-5,
                    timeout=20000)
    assert m.nm_per_px != round(m.nm_per_px, tools.nm_box.decimals())
    sent = []
    monkeypatch.setattr(m, "edit_calibration", lambda **kw: sent.append(kw))
    tools.apply_calibration()
    assert sent == []
    tools.fps_box.setValue(tools.fps_box.value() * 2)
    tools.apply_calibration()
    assert len(sent) == 1 and set(sent[0]) == {"fps"}
    tools.nm_box.setValue(tools.nm_box.value() * 2)
    tools.fps_box.setValue(tools.fps_box.value() / 2)
    tools.apply_calibration()
    assert set(sent[1]) == {"nm_per_px"}
