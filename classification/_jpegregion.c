/*
 * Region-of-interest JPEG decoding for crop_detections.
 *
 * A crop needs only the pixels of its box, yet a plain decoder turns the whole
 * photo into pixels. libjpeg-turbo (>= 1.5) can do less: jpeg_skip_scanlines()
 * entropy-decodes the rows above the region without the inverse DCT, colour
 * conversion or upsampling; jpeg_crop_scanline() limits all of that work to
 * the region's columns; and decoding stops after the region's last row.
 *
 * decode_region(data, left, top, right, bottom[, scale]) returns
 *     (pixels: bytes, mode: 'RGB' | 'L', width, height, x, y)
 * for a rectangle that contains the requested one: widened by one iMCU (8 or
 * 16 pixels, or more for unusual sampling) on every side, so that the
 * requested pixels are decoded exactly as a full decode would decode them
 * (upsampling at the edge of a cropped decode uses no neighbours), then
 * aligned to the iMCU grid by libjpeg. (x, y) is the top-left corner of the
 * returned rectangle in the photo.
 *
 * scale (1, 2, 4 or 8; default 1) decodes at 1/scale of the size, with
 * libjpeg's scaled inverse DCT (as Pillow's draft mode): the box is given in
 * full-size pixels, the result (size and corner) is in scaled pixels of a photo
 * of ceil(width / scale) x ceil(height / scale).
 *
 * Raises ValueError for what it does not decode (CMYK/YCCK, 12-bit, ...), and
 * OSError when libjpeg reports an error or any warning (corrupt data, data
 * ending early): the caller then falls back to a full decode, which decides
 * what the photo is worth.
 * The GIL is released while libjpeg works.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf escape;
    int premature_end;
    char message[JMSG_LENGTH_MAX];
} region_error;

static void region_error_exit(j_common_ptr cinfo)
{
    region_error *err = (region_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->escape, 1);
}

static void region_emit_message(j_common_ptr cinfo, int level)
{
    region_error *err = (region_error *)cinfo->err;
    if (level < 0) {
        cinfo->err->num_warnings++;
        if (cinfo->err->msg_code == JWRN_JPEG_EOF)
            err->premature_end = 1;
    }
}

enum { OK = 0, LIBJPEG_ERROR, UNSUPPORTED, TRUNCATED, CORRUPT, NO_MEMORY };

static JDIMENSION clamp(long v, long lo, long hi)
{
    return (JDIMENSION)(v < lo ? lo : (v > hi ? hi : v));
}

static PyObject *decode_region(PyObject *self, PyObject *args)
{
    Py_buffer view;
    long left, top, right, bottom, scale = 1;
    if (!PyArg_ParseTuple(args, "y*llll|l", &view, &left, &top, &right, &bottom, &scale))
        return NULL;
    if (scale != 1 && scale != 2 && scale != 4 && scale != 8) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "scale must be 1, 2, 4 or 8");
        return NULL;
    }

    struct jpeg_decompress_struct cinfo;
    region_error err;
    PyObject *volatile pixels = NULL;
    PyThreadState *volatile thread = NULL;
    volatile int status = OK;
    volatile int created = 0;
    JDIMENSION x = 0, width = 0, y = 0, height = 0;
    int channels = 3;

    memset(&cinfo, 0, sizeof(cinfo));
    memset(&err, 0, sizeof(err));
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = region_error_exit;
    err.pub.emit_message = region_emit_message;

    if (setjmp(err.escape)) {
        status = LIBJPEG_ERROR;
        goto done;
    }
    thread = PyEval_SaveThread();
    jpeg_create_decompress(&cinfo);
    created = 1;
    jpeg_mem_src(&cinfo, (const unsigned char *)view.buf, (unsigned long)view.len);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.data_precision != 8) {
        status = UNSUPPORTED;
        goto done;
    }
    if (cinfo.num_components == 3 &&
        (cinfo.jpeg_color_space == JCS_YCbCr || cinfo.jpeg_color_space == JCS_RGB)) {
        cinfo.out_color_space = JCS_RGB;
        channels = 3;
    } else if (cinfo.num_components == 1 && cinfo.jpeg_color_space == JCS_GRAYSCALE) {
        cinfo.out_color_space = JCS_GRAYSCALE;
        channels = 1;
    } else {
        status = UNSUPPORTED;
        goto done;
    }
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)scale;
    jpeg_start_decompress(&cinfo);

    {
        long imcu_w = (long)cinfo.max_h_samp_factor * DCTSIZE;
        long imcu_h = (long)cinfo.max_v_samp_factor * DCTSIZE;
        long full_w = (long)cinfo.output_width, full_h = (long)cinfo.output_height;
        left = left / scale;                       /* to scaled pixels, covering the box */
        top = top / scale;
        right = (right + scale - 1) / scale;
        bottom = (bottom + scale - 1) / scale;
        if (left >= right || top >= bottom) {
            status = UNSUPPORTED;
            goto done;
        }
        x = clamp(left - imcu_w, 0, full_w);
        width = clamp(right + imcu_w, 0, full_w) - x;
        y = clamp(top - imcu_h, 0, full_h);
        height = clamp(bottom + imcu_h, 0, full_h) - y;
        if (width == 0 || height == 0) {
            status = UNSUPPORTED;
            goto done;
        }
    }
    if (width < cinfo.output_width)
        jpeg_crop_scanline(&cinfo, &x, &width);   /* aligns x down, widens width */
    width = cinfo.output_width;

    PyEval_RestoreThread(thread);
    thread = NULL;
    pixels = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)width * height * channels);
    if (pixels == NULL) {
        status = NO_MEMORY;
        goto done;
    }
    thread = PyEval_SaveThread();

    if (y > 0 && jpeg_skip_scanlines(&cinfo, y) != y) {
        status = TRUNCATED;
        goto done;
    }
    {
        unsigned char *base = (unsigned char *)PyBytes_AS_STRING(pixels);
        size_t stride = (size_t)width * channels;
        JDIMENSION done_rows = 0;
        while (done_rows < height) {
            JSAMPROW rows[16];
            JDIMENSION want = height - done_rows, i, got;
            if (want > 16)
                want = 16;
            for (i = 0; i < want; i++)
                rows[i] = base + (size_t)(done_rows + i) * stride;
            got = jpeg_read_scanlines(&cinfo, rows, want);
            if (got == 0) {
                status = TRUNCATED;
                goto done;
            }
            done_rows += got;
        }
    }
    if (err.premature_end)
        status = TRUNCATED;
    else if (err.pub.num_warnings > 0)
        status = CORRUPT;

done:
    if (created)
        jpeg_destroy_decompress(&cinfo);   /* frees memory only; never errors */
    if (thread != NULL)
        PyEval_RestoreThread(thread);
    PyBuffer_Release(&view);

    switch (status) {
    case OK:
        return Py_BuildValue("(Nsllll)", pixels, channels == 3 ? "RGB" : "L", (long)width,
                             (long)height, (long)x, (long)y);
    case UNSUPPORTED:
        Py_XDECREF(pixels);
        PyErr_SetString(PyExc_ValueError, "region decoding does not handle this JPEG");
        return NULL;
    case TRUNCATED:
        Py_XDECREF(pixels);
        PyErr_SetString(PyExc_OSError, "JPEG data end before the region");
        return NULL;
    case CORRUPT:
        Py_XDECREF(pixels);
        PyErr_SetString(PyExc_OSError, "libjpeg warned about corrupt data");
        return NULL;
    case NO_MEMORY:
        return NULL;   /* PyBytes_FromStringAndSize set MemoryError */
    default:
        Py_XDECREF(pixels);
        PyErr_Format(PyExc_OSError, "libjpeg: %s", err.message);
        return NULL;
    }
}

static PyMethodDef methods[] = {
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, left, top, right, bottom[, scale]) -> (pixels, mode, width, height, x, y)\n\n"
     "Decodes the part of a JPEG that covers the box (exactly as a full decode would),\n"
     "plus a margin of at most two iMCUs per side; with scale 2, 4 or 8 at that fraction\n"
     "of the size (result in scaled pixels)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jpegregion",
    "Region-of-interest JPEG decoding with libjpeg-turbo.", -1, methods,
};

PyMODINIT_FUNC PyInit__jpegregion(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "LIBJPEG_VERSION", JPEG_LIB_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
