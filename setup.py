"""pyrhfos: a drop-in reimplementation of Red Hat Piranha's pulse/fos failover daemon."""

from setuptools import find_packages, setup

setup(
    name="pyrhfos",
    version="0.1.0",
    description="Two-node IP failover daemon, drop-in for Red Hat Piranha's pulse/fos",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="GPL-2.0-or-later",
    packages=find_packages(include=["pyrhfos", "pyrhfos.*"]),
    python_requires=">=3.11",
    install_requires=[
        "pyparsing>=3.1,<4",
        "psutil>=5.9,<8",
        "pyroute2>=0.7.12,<0.10",
        "scapy>=2.5,<2.9",
        "prometheus_client>=0.17,<1",  # metrics_port: the exposition format, not written by hand
        # use_regex = 1: RE2 matches expect in time linear in the answer, so no pattern can stall
        # the event loop (Python's re backtracks: "(a+)+$" takes forever). Google's own binding.
        "google-re2>=1.1,<2",
        # piranha-gui: Flask (small, well kept, Jinja2 autoescaping), Flask-WTF for CSRF tokens
        # (not hand-rolled), waitress as the production WSGI server (pure Python, no dev server).
        "flask>=3.0,<4",
        "flask-wtf>=1.2,<2",
        "waitress>=3.0,<4",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "hypothesis>=6.100,<7",
            "ruff>=0.5",
            # make test type-checks too: strict on core/ and config/ (pyproject.toml [tool.mypy]).
            "mypy>=1.10,<3",
            "types-psutil>=5.9",
            "types-waitress>=3.0",
            # tests/cli/test_install.py builds the wheel offline (--no-build-isolation): the build
            # backend comes from this venv (setuptools before 70.1 needs wheel for bdist_wheel).
            "setuptools>=61",
            "wheel>=0.40",
            # GUI tests drive Debian's /usr/bin/chromium (tools/host-deps.sh); no browser download.
            "playwright>=1.40,<2",
        ],
    },
    package_data={"pyrhfos.web": ["templates/*.html", "static/*"]},
    entry_points={
        "console_scripts": [
            "pulse=pyrhfos.cli.main:main",
            "piranha-gui=pyrhfos.web.app:main",
            "piranha-passwd=pyrhfos.web.passwd:main",
        ]
    },
    data_files=[
        ("share/doc/pyrhfos", ["etc/lvs.cf.example"]),
        ("share/man/man8", ["man/pulse.8"]),
        ("share/man/man5", ["man/lvs.cf.5"]),
    ],
)
