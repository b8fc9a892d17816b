# Install-time part of `cmake --install` and of the .deb (packaging/CMakeLists.txt): the
# systemd unit and the default config, with paths from the prefix given at install time, as
# Debian lays them out when it is /usr (/etc/mailtap, /lib/systemd/system) and under the
# prefix otherwise (/usr/local/etc/mailtap, /usr/local/lib/systemd/system). Run by
# install(SCRIPT) with MAILTAP_PACKAGING_SOURCE and MAILTAP_PACKAGING_BINARY set.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(sysconfdir "/etc")
  set(unitdir "/lib/systemd/system")
else()
  set(sysconfdir "${CMAKE_INSTALL_PREFIX}/etc")
  set(unitdir "${CMAKE_INSTALL_PREFIX}/lib/systemd/system")
endif()
set(MAILTAP_UNIT_BINARY "${CMAKE_INSTALL_PREFIX}/bin/mailtap")
set(MAILTAP_UNIT_CONFIG "${sysconfdir}/mailtap/mailtap.toml")
# A directory of this install's own: two installs with different prefixes may run at once
# (cpack and cmake --install from the same build tree).
string(RANDOM LENGTH 12 staging)
set(staging "${MAILTAP_PACKAGING_BINARY}/unit-${staging}")
configure_file("${MAILTAP_PACKAGING_SOURCE}/mailtap.service.in" "${staging}/mailtap.service" @ONLY)
# file(INSTALL) puts $DESTDIR in front of these absolute destinations.
file(INSTALL DESTINATION "${unitdir}" TYPE FILE FILES "${staging}/mailtap.service"
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(REMOVE_RECURSE "${staging}")
file(INSTALL DESTINATION "${sysconfdir}/mailtap" TYPE FILE FILES "${MAILTAP_PACKAGING_SOURCE}/mailtap.toml"
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
