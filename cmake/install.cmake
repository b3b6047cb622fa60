# `cmake --install` and the Debian package: the mlx2gguf binary and its man page (made from its --help texts).
include(GNUInstallDirs)

set(MLX2GGUF_MAN_PAGE ${CMAKE_BINARY_DIR}/man/mlx2gguf.1)
add_custom_command(OUTPUT ${MLX2GGUF_MAN_PAGE}
  COMMAND ${CMAKE_COMMAND} -DMLX2GGUF=$<TARGET_FILE:mlx2gguf> -DOUTPUT=${MLX2GGUF_MAN_PAGE}
          -P ${CMAKE_SOURCE_DIR}/cmake/man_page.cmake
  DEPENDS mlx2gguf ${CMAKE_SOURCE_DIR}/cmake/man_page.cmake
  COMMENT "Writing the man page from mlx2gguf --help")
add_custom_target(mlx2gguf_man ALL DEPENDS ${MLX2GGUF_MAN_PAGE})

install(TARGETS mlx2gguf RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${MLX2GGUF_MAN_PAGE} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME mlx2gguf)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Converts mlx-lm model folders and fine-tunes (float or MLX-quantized) to GGUF for llama.cpp")
set(CPACK_PACKAGE_CONTACT "mlx2gguf maintainers")
set(CPACK_DEBIAN_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# Runtime dependencies (libfmt, libtbb, libstdc++ ...) as dpkg-shlibdeps finds them in the binary.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_STRIP_FILES ON)
include(CPack)
