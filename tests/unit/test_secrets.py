"""config.secrets.read_secret: environment or file, and the value never in an error message."""

import pytest

from config.secrets import MAX_SECRET_FILE_BYTES, SecretError, read_secret

SECRET = "s3cr3t-value-that-must-not-leak"


def test_unset_secret_is_none():
    assert read_secret("smtp_password", {}) is None


def test_value_from_the_environment():
    secret = read_secret("smtp_password", {"CARTWATCH_SMTP_PASSWORD": SECRET})
    assert secret is not None and secret.get_secret_value() == SECRET
    assert SECRET not in repr(secret) and SECRET not in str(secret)


def test_value_from_a_file_without_its_trailing_newline(tmp_path):
    path = tmp_path / "token"
    path.write_text(SECRET + "\n")
    secret = read_secret("api_token", {"CARTWATCH_API_TOKEN_FILE": str(path)})
    assert secret is not None and secret.get_secret_value() == SECRET


def test_both_variable_and_file_is_an_error_that_names_them_only(tmp_path):
    path = tmp_path / "token"
    path.write_text(SECRET)
    env = {"CARTWATCH_API_TOKEN": SECRET, "CARTWATCH_API_TOKEN_FILE": str(path)}
    with pytest.raises(SecretError) as error:
        read_secret("api_token", env)
    assert str(error.value) == (
        "set one of CARTWATCH_API_TOKEN and CARTWATCH_API_TOKEN_FILE, not both")


@pytest.mark.parametrize("content", [b"", b"\n", b"   \n"])
def test_empty_secret_file_is_refused(tmp_path, content):
    path = tmp_path / "empty"
    path.write_bytes(content)
    with pytest.raises(SecretError, match="CARTWATCH_LINK_SECRET_FILE is empty"):
        read_secret("link_secret", {"CARTWATCH_LINK_SECRET_FILE": str(path)})


def test_empty_variable_is_refused():
    with pytest.raises(SecretError, match="^CARTWATCH_API_TOKEN is empty$"):
        read_secret("api_token", {"CARTWATCH_API_TOKEN": ""})


def test_missing_file_names_the_variable_and_path(tmp_path):
    path = tmp_path / "nope"
    with pytest.raises(SecretError) as error:
        read_secret("api_token", {"CARTWATCH_API_TOKEN_FILE": str(path)})
    assert str(error.value) == (
        f"CARTWATCH_API_TOKEN_FILE: cannot read {path}: No such file or directory")


def test_binary_or_huge_files_are_refused_without_echoing_content(tmp_path):
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe" + SECRET.encode())
    with pytest.raises(SecretError) as error:
        read_secret("api_token", {"CARTWATCH_API_TOKEN_FILE": str(binary)})
    assert "not UTF-8" in str(error.value) and SECRET not in str(error.value)
    huge = tmp_path / "huge"
    huge.write_bytes(b"x" * (MAX_SECRET_FILE_BYTES + 1))
    with pytest.raises(SecretError, match="larger than"):
        read_secret("api_token", {"CARTWATCH_API_TOKEN_FILE": str(huge)})
