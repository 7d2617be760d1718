"""``tem-operando phases list|show|add|remove`` against a user library in a tmp folder."""

from __future__ import annotations

import textwrap

import pytest

from tem_operando.cli import main


@pytest.fixture
def library(tmp_path, monkeypatch):
    monkeypatch.setenv("TEM_OPERANDO_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data" / "phases"


def test_list_shows_builtin_phases(library, capsys):
    assert main(["phases", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("Au", "Na15Sn4", "MoO3", "FeS2", "TiO2"):
        assert f"\n{name} " in "\n" + out
    assert "builtin" in out


def test_show_prints_structure_and_rings(library, capsys):
    assert main(["phases", "show", "au", "--q-max", "6"]) == 0
    out = capsys.readouterr().out
    assert "space group 225" in out and "a=4.0782" in out
    assert "111" in out and "0.2355" in out  # d(111) of gold in nm


def test_unknown_phase_is_a_one_line_error(library, capsys):
    assert main(["phases", "show", "Kryptonite"]) == 2
    err = capsys.readouterr().err
    assert "unknown phase 'Kryptonite'" in err and "Na15Sn4" in err


def test_add_from_parameters_then_list_and_remove(library, capsys):
    assert main(["phases", "add", "--name", "Ag", "--space-group", "225", "--cell", "4.0857",
                 "--site", "Ag,0,0,0"]) == 0
    assert "added Ag" in capsys.readouterr().out
    assert (library / "Ag.json").is_file()
    assert main(["phases", "list"]) == 0
    assert "Ag" in capsys.readouterr().out
    assert main(["phases", "show", "Ag", "--q-max", "5"]) == 0
    assert "0.2359" in capsys.readouterr().out  # d(111) = 4.0857 Å / √3
    assert main(["phases", "remove", "Ag"]) == 0
    assert not (library / "Ag.json").exists()


def test_add_from_cif(library, tmp_path, capsys):
    cif = tmp_path / "nacl.cif"
    cif.write_text(textwrap.dedent("""\
        data_NaCl
        _cell_length_a 5.64
        _cell_length_b 5.64
        _cell_length_c 5.64
        _cell_angle_alpha 90
        _cell_angle_beta 90
        _cell_angle_gamma 90
        _symmetry_space_group_name_H-M 'F m -3 m'
        _symmetry_Int_Tables_number 225
        loop_
        _atom_site_label
        _atom_site_type_symbol
        _atom_site_fract_x
        _atom_site_fract_y
        _atom_site_fract_z
        Na1 Na 0 0 0
        Cl1 Cl 0.5 0.5 0.5
        """))
    assert main(["phases", "add", str(cif), "--name", "NaCl"]) == 0
    assert "added NaCl" in capsys.readouterr().out


def test_add_needs_a_cif_or_parameters(library, capsys):
    assert main(["phases", "add", "--name", "X"]) == 2
    err = capsys.readouterr().err
    assert "--space-group" in err and "--cell" in err and "--site" in err
    assert main(["phases", "add", "--name", "Bad", "--space-group", "225", "--cell", "4,x",
                 "--site", "Au,0,0,0"]) == 2
