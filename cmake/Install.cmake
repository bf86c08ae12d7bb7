# Install rules and the Debian package; see the top-level CMakeLists.txt.
