# Install rules and the Debian package (CPack DEB).
#
# The rules describe the Debian layout that systemd/gatecache.service and
# the packaged config name:
#   /usr/bin/gatecache
#   /lib/systemd/system/gatecache.service   (systemd.pc systemdsystemunitdir)
#   /usr/lib/sysusers.d/gatecache.conf      (the gatecache system user)
#   /etc/gatecache/gatecache.yaml           (packaged default, a conffile)
#   /usr/share/gatecache/images/*.yaml      (prewarm image sets)
#   /usr/share/doc/gatecache/               (READMEs, example config)
# The service keeps its state in /var/lib/gatecache and its admin socket in
# /run/gatecache; systemd creates both (StateDirectory=, RuntimeDirectory=).
# The unit, the config and the sysusers file go to absolute paths, and the
# rest under the prefix, which the package always sets to /usr.
#
# `scripts/package.sh` builds the .deb.

# The unit starts /usr/bin/gatecache, so /usr is the default prefix of a
# new build directory.
if(CMAKE_INSTALL_PREFIX_INITIALIZED_TO_DEFAULT)
  set(CMAKE_INSTALL_PREFIX
      /usr
      CACHE PATH "Install prefix" FORCE)
endif()
include(GNUInstallDirs)
if(NOT CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  message(STATUS "cmake --install puts gatecache in "
                 "${CMAKE_INSTALL_FULL_BINDIR}, but gatecache.service starts "
                 "/usr/bin/gatecache; the Debian package uses /usr")
endif()

# Directories that systemd reads, from systemd.pc when it is installed
# (package systemd), else the Debian 12 paths.
pkg_get_variable(GATECACHE_PC_UNIT_DIR systemd systemdsystemunitdir)
pkg_get_variable(GATECACHE_PC_SYSUSERS_DIR systemd sysusersdir)
if(NOT GATECACHE_PC_UNIT_DIR)
  set(GATECACHE_PC_UNIT_DIR /lib/systemd/system)
endif()
if(NOT GATECACHE_PC_SYSUSERS_DIR)
  set(GATECACHE_PC_SYSUSERS_DIR /usr/lib/sysusers.d)
endif()
set(GATECACHE_SYSTEMD_UNIT_DIR
    ${GATECACHE_PC_UNIT_DIR}
    CACHE PATH "Where gatecache.service is installed")
set(GATECACHE_SYSUSERS_DIR
    ${GATECACHE_PC_SYSUSERS_DIR}
    CACHE PATH "Where the sysusers.d file of the gatecache user is installed")

install(TARGETS gatecache RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${PROJECT_SOURCE_DIR}/systemd/gatecache.service
        DESTINATION ${GATECACHE_SYSTEMD_UNIT_DIR})
install(
  FILES ${PROJECT_SOURCE_DIR}/systemd/gatecache.sysusers
  DESTINATION ${GATECACHE_SYSUSERS_DIR}
  RENAME gatecache.conf)
install(FILES ${PROJECT_SOURCE_DIR}/systemd/gatecache.yaml
        DESTINATION /etc/gatecache)
# Every *.yaml under images/ at install time, so a new set needs no edit
# here. The directory matches `prewarm.images_dir`'s default.
install(
  DIRECTORY ${PROJECT_SOURCE_DIR}/images/
  DESTINATION ${CMAKE_INSTALL_DATADIR}/gatecache/images
  FILES_MATCHING
  PATTERN "*.yaml")
install(FILES ${PROJECT_SOURCE_DIR}/README.md
              ${PROJECT_SOURCE_DIR}/appliance/config/gatecache.example.yaml
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(
  FILES ${PROJECT_SOURCE_DIR}/systemd/README.md
  DESTINATION ${CMAKE_INSTALL_DOCDIR}
  RENAME README.systemd.md)

# Debian package.
set(GATECACHE_DEB_MAINTAINER
    "gatecache maintainers <root@localhost>"
    CACHE STRING "Maintainer field of the Debian package")
# TODO: replace the placeholder maintainer address before publishing.

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME gatecache)
set(CPACK_PACKAGE_VENDOR gatecache)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "pull-through cache for container images (OCI registry mirror)")
# A list separator (semicolon) would split the text, so there is none.
string(
  CONCAT CPACK_PACKAGE_DESCRIPTION
         "gatecache runs on the gateway in front of container clusters.\n"
         "Nodes pull images through it over TLS. It fetches each manifest\n"
         "and blob from the upstream registry once, verifies its digest and\n"
         "serves the stored copy, also while the upstream is unreachable.")
set(CPACK_PACKAGE_CONTACT "${GATECACHE_DEB_MAINTAINER}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)

set(CPACK_DEBIAN_PACKAGE_NAME gatecache)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Library dependencies come from dpkg-shlibdeps on the binary. The
# postinst creates the user with systemd-sysusers, or adduser without
# systemd.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "systemd | adduser")
# conffiles lists /etc/gatecache/gatecache.yaml, so dpkg keeps an
# administrator's changes to it across upgrades.
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/systemd/debian/conffiles
    ${PROJECT_SOURCE_DIR}/systemd/debian/postinst
    ${PROJECT_SOURCE_DIR}/systemd/debian/prerm
    ${PROJECT_SOURCE_DIR}/systemd/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
