# What `cmake --install` puts beside the programs and the client library (docs/install.md):
# the man pages, the systemd unit and the service's config file. The unit and the config
# file are placed by install-time code so that `cmake --install build --prefix DIR` fills in
# the prefix it is given, not the one configured.
install(FILES ${PROJECT_SOURCE_DIR}/dist/man/zmixd.1 ${PROJECT_SOURCE_DIR}/dist/man/zmix.1
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)

set(ZMIX_SYSTEMD_UNIT_DIR "lib/systemd/system" CACHE STRING
    "Where the systemd unit is installed, relative to the prefix")
install(CODE "set(ZMIX_SOURCE_DIR \"${PROJECT_SOURCE_DIR}\")
set(ZMIX_BINDIR_REL \"${CMAKE_INSTALL_BINDIR}\")
set(ZMIX_UNIT_DIR \"${ZMIX_SYSTEMD_UNIT_DIR}\")")
install(CODE [[
  # The prefix /usr keeps its configuration in /etc (as GNUInstallDirs' FULL_SYSCONFDIR).
  if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
    set(_conf_dir "/etc/zmix")
  else()
    set(_conf_dir "${CMAKE_INSTALL_PREFIX}/etc/zmix")
  endif()
  if(IS_ABSOLUTE "${ZMIX_BINDIR_REL}")
    set(ZMIX_BINDIR "${ZMIX_BINDIR_REL}")
  else()
    set(ZMIX_BINDIR "${CMAKE_INSTALL_PREFIX}/${ZMIX_BINDIR_REL}")
  endif()
  set(ZMIX_CONF "${_conf_dir}/zmixd.conf")
  file(READ "${ZMIX_SOURCE_DIR}/dist/systemd/zmixd.service.in" _unit)
  string(CONFIGURE "${_unit}" _unit @ONLY)
  set(_unit_file "$ENV{DESTDIR}${CMAKE_INSTALL_PREFIX}/${ZMIX_UNIT_DIR}/zmixd.service")
  message(STATUS "Installing: ${_unit_file}")
  file(WRITE "${_unit_file}" "${_unit}")
  list(APPEND CMAKE_INSTALL_MANIFEST_FILES "${_unit_file}")
  # An edited config file is never replaced.
  set(_conf_file "$ENV{DESTDIR}${ZMIX_CONF}")
  if(EXISTS "${_conf_file}")
    message(STATUS "Keeping: ${_conf_file} (already there)")
  else()
    message(STATUS "Installing: ${_conf_file}")
    file(MAKE_DIRECTORY "$ENV{DESTDIR}${_conf_dir}")
    file(COPY_FILE "${ZMIX_SOURCE_DIR}/dist/zmixd.conf" "${_conf_file}")
    list(APPEND CMAKE_INSTALL_MANIFEST_FILES "${_conf_file}")
  endif()
]])
